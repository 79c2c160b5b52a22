"""Text templates written into bundles: install script, launcher, systemd unit.

Kept as Python strings (not data files) so they ship with every kind of install.
"""

from __future__ import annotations

# Runs on the device from the unpacked bundle. Installs a venv beside itself (device side only:
# the edgesdk wheel and its runtime dependencies; never TensorFlow). `--system` (as root) also
# creates the service user, copies the bundle to /opt/edgesdk/APP and enables the systemd unit.
INSTALL_SH = r"""#!/bin/sh
# Install this edgesdk bundle ({app}, {bundle_name}): a venv with the device side only (no TensorFlow).
#   ./install.sh            venv in ./venv (what `edgesdk deploy push` runs)
#   sudo ./install.sh --system   also: user 'edgesdk', /opt/edgesdk/{app}, systemd unit {unit}
# EDGESDK_PYTHON: interpreter for the venv (default python3, 3.10+). EDGESDK_VENV: where (default ./venv).
# EDGESDK_SITE_PACKAGES: a folder of already-installed packages to reuse (pip then installs only what is missing).
set -eu
here=$(cd "$(dirname "$0")" && pwd -P)
PY=${{EDGESDK_PYTHON:-python3}}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "install.sh: $PY is missing or older than Python 3.10; install python3 (3.10+) and python3-venv" >&2
  exit 3
fi
if [ "${{1:-}}" = "--system" ]; then
  [ "$(id -u)" -eq 0 ] || {{ echo "install.sh --system: run as root (sudo)" >&2; exit 2; }}
  id edgesdk >/dev/null 2>&1 || useradd --system --home-dir /var/lib/edgesdk --shell /usr/sbin/nologin edgesdk
  usermod -a -G {groups} edgesdk
  dest=/opt/edgesdk/{app}/{bundle_name}
  rm -rf "$dest" && mkdir -p "$dest" && cp -a "$here/." "$dest/"
  EDGESDK_PYTHON="$PY" "$dest/install.sh"
  ln -sfn "$dest" /opt/edgesdk/{app}/current.new && mv -T /opt/edgesdk/{app}/current.new /opt/edgesdk/{app}/current
  install -m 0644 "$dest/{unit}" /etc/systemd/system/{unit}
  systemctl daemon-reload
  systemctl enable {unit}
  systemctl restart {unit}
  echo "install.sh: {unit} started; logs: journalctl -u {unit} -f"
  exit 0
fi
# Made in place (a venv cannot move: its scripts name its path); `deploy push` marks the bundle
# complete only after this script succeeds.
venv=${{EDGESDK_VENV:-$here/venv}}
rm -rf "$venv"
"$PY" -m venv "$venv"
if [ -n "${{EDGESDK_SITE_PACKAGES:-}}" ]; then
  purelib=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$EDGESDK_SITE_PACKAGES" > "$purelib/_edgesdk_site.pth"
fi
if [ -d "$here/wheels" ]; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-index --find-links "$here/wheels" "$here/{wheel}"
else
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$here/{wheel}"
fi
if [ -n "${{EDGESDK_SITE_PACKAGES:-}}" ]; then
  # pip counts an edgesdk found in the reused folder as installed: put this bundle's own in the venv.
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --force-reinstall "$here/{wheel}"
fi
"$venv/bin/python" -c 'import sdk.runner' || {{ echo "install.sh: the installed runtime does not import" >&2; exit 4; }}
echo "install.sh: installed into $venv"
"""

# The service's command: the app from its config; the bundle id lets /healthz say which bundle runs.
RUN_SH = r"""#!/bin/sh
# Run this bundle's app ({app}) from config.yaml; used by the systemd unit and by `edgesdk deploy push`.
here=$(cd "$(dirname "$0")" && pwd -P)
EDGESDK_BUNDLE=$(basename "$here")
export EDGESDK_BUNDLE
cd "$here"
exec "$here/venv/bin/edgesdk" run "$here/config.yaml"
"""

UNIT = """[Unit]
Description=edgesdk {app} ({bundle_name})
After=network-online.target sound.target
Wants=network-online.target
StartLimitIntervalSec=300
StartLimitBurst=5

[Service]
Type=simple
User=edgesdk
Group=edgesdk
SupplementaryGroups={groups}
ExecStart=/opt/edgesdk/{app}/current/run.sh
Restart=on-failure
RestartSec=5
StateDirectory=edgesdk
Environment=HOME=/var/lib/edgesdk
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
LockPersonality=yes
DevicePolicy=closed
{device_allow}

[Install]
WantedBy=multi-user.target
"""

# device class -> (systemd DeviceAllow lines, supplementary groups)
DEVICE_RULES = {
    "audio": (["DeviceAllow=char-alsa rw"], ["audio"]),
    "video": (["DeviceAllow=char-video4linux rw", "DeviceAllow=/dev/dma_heap rw"], ["video"]),
    "edgetpu-usb": (["DeviceAllow=char-usb_device rw"], ["plugdev"]),
    "edgetpu-pci": (["DeviceAllow=/dev/apex_0 rw"], []),
}
