"""Device profiles (strict YAML) and discovery on real files laid out like sysfs."""

from __future__ import annotations

import pytest

from devices.discovery import edgetpus, match_profile
from devices.profile import load_profile, profile_names
from sdk.errors import ConfigError


def test_all_shipped_profiles_load():
    names = profile_names()
    assert {"rpi4", "rpi5", "coral-devboard", "rpi-coral-usb", "generic-x86"} <= set(names)
    for n in names:
        p = load_profile(n)
        assert p.name == n and p.delegates and p.camera.fps > 0 and p.audio.sample_rate > 0
    assert load_profile("rpi-coral-usb").delegate == "edgetpu:usb"


def test_unknown_keys_are_rejected_with_path_and_suggestion(tmp_path):
    bad = tmp_path / "board.yaml"
    bad.write_text("name: b\ndescription: d\nthreads: 2\ndelegates: [cpu]\ncamera: {size: [640, 480], fsp: 30}\n")
    with pytest.raises(ConfigError, match=r"'camera.fsp'.*Did you mean 'fps'"):
        load_profile(bad)
    bad.write_text("name: b\ndescription: d\nthreads: two\ndelegates: [cpu]\n")
    with pytest.raises(ConfigError, match="threads: expected int"):
        load_profile(bad)
    bad.write_text("name: b\ndescription: d\nthreads: 2\ndelegates: [tpu:usbx]\n")
    with pytest.raises(ConfigError, match="invalid Edge TPU device"):
        load_profile(bad)
    with pytest.raises(ConfigError, match="Did you mean 'rpi5'"):
        load_profile("rpi55")


def test_match_profile():
    assert match_profile("Raspberry Pi 5 Model B Rev 1.0", "aarch64", []) == "rpi5"
    assert match_profile("Raspberry Pi 4 Model B Rev 1.4", "aarch64", ["usb:0 (18d1:9302)"]) == "rpi-coral-usb"
    assert match_profile("", "x86_64", []) == "generic-x86"
    assert match_profile("Freescale i.MX8MQ Phanbell", "aarch64", ["pci:0 (/dev/apex_0)"]) == "coral-devboard"


def test_edgetpu_discovery_reads_usb_ids_and_apex_nodes(tmp_path):
    usb, dev = tmp_path / "usb", tmp_path / "dev"
    for name, (vid, pid) in {"1-1": ("1a6e", "089a"), "1-2": ("046d", "0825"), "2-1": ("18d1", "9302")}.items():
        (usb / name).mkdir(parents=True)
        (usb / name / "idVendor").write_text(vid + "\n")
        (usb / name / "idProduct").write_text(pid + "\n")
    dev.mkdir()
    (dev / "apex_0").write_text("")
    found = edgetpus(str(usb), str(dev))
    assert found[0].startswith("usb:0 (1a6e:089a)") and found[1].startswith("usb:1 (18d1:9302)")
    assert found[2].startswith("pci:0") and len(found) == 3
