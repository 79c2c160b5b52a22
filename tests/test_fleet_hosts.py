"""Hosts and inventories are checked before Ansible runs; hostile entries never reach ``ssh``.

The proof uses a fake ``ssh`` first on ``PATH`` that records its argv: Ansible's ssh connection
runs ``ssh`` from ``PATH``, and a control run with a good host shows the fake is really called.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from cli import main
from deploy.bundle import make_bundle
from deploy.hosts import Host, parse_host, parse_hosts
from deploy.inventory import expand_pattern, load_inventory
from deploy.push import attach_bundles
from sdk.errors import ConfigError
from tests.test_bundle import write_wav


@pytest.mark.parametrize("text, want", [
    ("pi@kitchen.local", Host("kitchen.local", "pi", None)),
    ("pi@10.0.0.7:2222", Host("10.0.0.7", "pi", 2222)),
    ("garage_pi", Host("garage_pi", None, None)),
    ("pi@[fe80::1%eth0]:22", Host("fe80::1%eth0", "pi", 22)),
    ("[::1]", Host("::1", None, None)),
    ("::1", Host("::1", None, None)),
])
def test_good_hosts(text, want):
    assert parse_host(text) == want


@pytest.mark.parametrize("text, why", [
    ("-oProxyCommand=touch /tmp/x", "starts with '-'"),
    ("-oProxyCommand=id", "starts with '-'"),
    ("pi@-oProxyCommand=id", "starts with '-'"),
    ("-l@host", "starts with '-'"),
    ("pi@host;reboot", "characters a host name cannot have"),
    ("pi@ho$t", "characters"),
    ("pi@host\x1b[2J", "control character"),
    ("pi@host:99999", "1 to 65535"),
    ("pi@host:22x", "1 to 65535"),
    ("pi@[::1", "expected [IPV6]"),
    ("pi@[not-v6]:22", "not a valid IPv6"),
    ("pi@", "empty"),
    ("p i@host", "whitespace"),
    ("pi$(id)@host", "login name"),
])
def test_bad_hosts(text, why):
    with pytest.raises(ConfigError, match="refused") as e:
        parse_host(text)
    assert why in str(e.value)


def test_hosts_file_names_the_line(tmp_path):
    f = tmp_path / "hosts.txt"
    f.write_text("# fleet\npi@a:2201\n\npi@b  # comment\n -oProxyCommand=x\n")
    with pytest.raises(ConfigError, match=r"hosts.txt line 5: host '-oProxyCommand=x' refused"):
        parse_hosts([], str(f))
    f.write_text("pi@a\npi@a\n")
    with pytest.raises(ConfigError, match="listed twice"):
        parse_hosts([], str(f))
    f.write_text("pi@a:2201\npi@b\n")
    assert [h.label for h in parse_hosts([], str(f), default_port=2222)] == ["pi@a:2201", "pi@b:2222"]


def test_ranges_and_ports():
    assert expand_pattern("pi[01:03].lan:2222", "x") == (["pi01.lan", "pi02.lan", "pi03.lan"], 2222)
    assert expand_pattern("cam[a:c]", "x") == (["cama", "camb", "camc"], None)
    assert expand_pattern("[fe80::1]:22", "x") == (["fe80::1"], 22)
    assert expand_pattern("n[0:4:2]", "x")[0] == ["n0", "n2", "n4"]


def test_ini_and_yaml_inventories_same_result(tmp_path):
    ini = tmp_path / "fleet.ini"
    ini.write_text("""# the house
[kitchen]
pi[1:2] ansible_host=10.0.0.1 ansible_port=2201
[garage]
gpi ansible_host=10.0.0.9 ansible_user=pi
[house:children]
kitchen
garage
[kitchen:vars]
edgesdk_bundle=detect.tar.gz
edgesdk_health_timeout=30
""")
    yml = tmp_path / "fleet.yml"
    yml.write_text("""all:
  children:
    house:
      children:
        kitchen:
          hosts:
            pi[1:2]: {ansible_host: 10.0.0.1, ansible_port: 2201}
          vars: {edgesdk_bundle: detect.tar.gz, edgesdk_health_timeout: 30}
        garage:
          hosts:
            gpi: {ansible_host: 10.0.0.9, ansible_user: pi}
""")
    a, b = load_inventory(ini), load_inventory(yml)
    assert list(a.hosts) == list(b.hosts) == ["pi1", "pi2", "gpi"]
    assert a.hosts == b.hosts and a.groups["kitchen"].vars == b.groups["kitchen"].vars == {"edgesdk_bundle": "detect.tar.gz",
                                                                                             "edgesdk_health_timeout": 30}
    assert a.groups["house"].children == b.groups["house"].children == ["kitchen", "garage"]
    doc = a.to_ansible({"edgesdk_dir": "/srv/edge"})
    assert doc["all"]["vars"] == {"edgesdk_dir": "/srv/edge"} and list(doc["all"]["hosts"]) == ["pi1", "pi2", "gpi"]
    assert doc["kitchen"]["hosts"] == {"pi1": None, "pi2": None} and doc["house"]["children"] == {"kitchen": None, "garage": None}


def test_group_and_host_vars_folders(tmp_path):
    (tmp_path / "group_vars" / "kitchen").mkdir(parents=True)
    (tmp_path / "host_vars").mkdir()
    (tmp_path / "fleet.ini").write_text("[kitchen]\npi1\n")
    (tmp_path / "group_vars" / "kitchen" / "app.yml").write_text("edgesdk_bundle: k.tar.gz\n")
    (tmp_path / "host_vars" / "pi1.yml").write_text("ansible_host: 10.1.1.1\n")
    inv = load_inventory(tmp_path / "fleet.ini")
    assert inv.groups["kitchen"].vars == {"edgesdk_bundle": "k.tar.gz"} and inv.hosts["pi1"] == {"ansible_host": "10.1.1.1"}
    (tmp_path / "host_vars" / "pi1.yml").write_text("ansible_host: '-oProxyCommand=id'\n")
    with pytest.raises(ConfigError, match=r"host pi1: ansible_host: host '-oProxyCommand=id' refused"):
        load_inventory(tmp_path / "fleet.ini")
    (tmp_path / "host_vars" / "pi1.yml").write_text("$ANSIBLE_VAULT;1.1;AES256\n6162\n")
    with pytest.raises(ConfigError, match="vault-encrypted"):
        load_inventory(tmp_path / "fleet.ini")


@pytest.mark.parametrize("name, text, message", [
    ("a.ini", "[kitchen]\n-oProxyCommand=touch {x}\n", "a.ini line 2: host '-oProxyCommand=touch' refused: it starts with '-'"),
    ("b.ini", "[kitchen]\npi;touch${{IFS}}{x} ansible_port=22\n", "b.ini line 2: host 'pi;touch${{IFS}}{x}' refused"),
    ("c.ini", "[kitchen]\npi ansible_user=-oProxyCommand=x\n", "c.ini line 2: host pi: ansible_user: user '-oProxyCommand=x' refused"),
    ("d.yml", "all:\n  hosts:\n    pi: {{ansible_host: '-oProxyCommand=touch {x}'}}\n", "d.yml: host pi: ansible_host"),
    ("e.yml", "kitchen:\n  vars: {{ansible_port: '22 -oProxyCommand=x'}}\n  hosts: {{pi: }}\n", "e.yml: group kitchen: ansible_port: port"),
    ("f.yml", "plugin: amazon.aws.aws_ec2\n", "inventory plugins are not supported"),
    ("g.ini", "#!/bin/sh\necho '{{}}'\n", "inventory scripts are not supported"),
])
def test_hostile_inventory_refused_before_ssh(name, text, message, tmp_path, fake_ssh, bundle, capsys):
    x = tmp_path / "pwned"
    inv = tmp_path / name
    inv.write_text(text.format(x=x))
    rc = main(["deploy", "push", bundle, "--inventory", str(inv), "--known-hosts", str(tmp_path / "kh")])
    err = capsys.readouterr().err
    assert rc == 2 and message.format(x=x) in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert not fake_ssh.exists() and not x.exists()


def test_hostile_hosts_refused_before_ssh(tmp_path, fake_ssh, bundle, capsys):
    x = tmp_path / "pwned"
    rc = main(["deploy", "push", bundle, "--", f"-oProxyCommand=touch {x}"])
    assert rc == 2 and "starts with '-'" in capsys.readouterr().err
    hosts = tmp_path / "hosts.txt"
    hosts.write_text(f"pi@10.0.0.1\npi@10.0.0.2\x07\n-oProxyCommand=touch {x}\n")
    rc = main(["deploy", "push", bundle, "--hosts", str(hosts)])
    err = capsys.readouterr().err
    assert rc == 2 and "hosts.txt line 2" in err and "control character" in err, err
    rc = main(["deploy", "status", "--", "-oProxyCommand=id"])
    assert rc == 2 and "starts with '-'" in capsys.readouterr().err
    assert not fake_ssh.exists() and not x.exists()

    # the control: a good host does reach the fake ssh (so the refusals above were the checks' doing)
    rc = main(["deploy", "push", bundle, "pi@127.0.0.1:2", "--known-hosts", str(tmp_path / "kh")])
    err = capsys.readouterr().err
    argv = fake_ssh.read_text().splitlines()
    assert rc == 2 and "unreachable" in err, err
    assert "127.0.0.1" in argv and not any(a.startswith("-oProxy") for a in argv)


def test_batch_and_max_fail_refused(bundle, fake_ssh, capsys):
    assert main(["deploy", "push", bundle, "pi@h", "--batch", "0"]) == 2
    assert "--batch must be N, N%" in capsys.readouterr().err
    assert main(["deploy", "push", bundle, "pi@h", "--max-fail", "2"]) == 2
    assert "--max-fail must be a percentage" in capsys.readouterr().err
    assert main(["deploy", "push", "pi@h"]) == 2
    assert "no bundle" in capsys.readouterr().err
    assert not fake_ssh.exists()


def test_limit_matching_nothing(tmp_path, fake_ssh, bundle, capsys):
    (tmp_path / "fleet.ini").write_text("[kitchen]\npi ansible_host=127.0.0.1 ansible_port=2\n")
    rc = main(["deploy", "push", bundle, "--inventory", str(tmp_path / "fleet.ini"), "--limit", "garage"])
    err = capsys.readouterr().err
    assert rc == 2 and err.strip() == "edgesdk: error: --limit 'garage' matches no host of the inventory; name groups or hosts in it", err
    assert not fake_ssh.exists()


def test_inventory_bundles_resolved_per_group(tmp_path, bundle):
    shutil.copy(bundle, tmp_path / "k.tar.gz")
    (tmp_path / "fleet.ini").write_text("[kitchen]\npi1\n[kitchen:vars]\nedgesdk_bundle=k.tar.gz\n[garage]\npi2 edgesdk_bundle=missing.tar.gz\n")
    inv = load_inventory(tmp_path / "fleet.ini")
    with pytest.raises(ConfigError, match=r"host pi2: .*missing.tar.gz: no such bundle"):
        attach_bundles(inv, tmp_path)
    del inv.hosts["pi2"]["edgesdk_bundle"]
    assert attach_bundles(inv, tmp_path) == 1
    kv = inv.groups["kitchen"].vars
    assert kv["edgesdk_bundle"] == str(tmp_path / "k.tar.gz") and len(kv["edgesdk_bundle_sha256"]) == 64 and len(kv["edgesdk_bundle_id"]) == 16


@pytest.fixture()
def fake_ssh(tmp_path, monkeypatch) -> Path:
    """An ``ssh`` first on PATH that records its argv in the returned file and fails like a closed port."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "ssh-argv.log"
    (bindir / "ssh").write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" >> {log}\n"
                                "echo 'ssh: connect to host 127.0.0.1 port 2: Connection refused' >&2\nexit 255\n")
    (bindir / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return log


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> str:
    """A real bundle (bundling does not run the model, so any bytes do)."""
    d = tmp_path_factory.mktemp("bundle")
    (d / "kws.tflite").write_bytes(b"TFL3 model bytes" * 10)
    write_wav(d / "clip.wav", np.zeros(1600, np.float32))
    (d / "app.yaml").write_text("app: trigger-word\nmodel: kws.tflite\nsource: clip.wav\nprofile: rpi5\noutputs: {metrics_port: 9100}\n")
    return make_bundle(d / "app.yaml", d / "app.tar.gz")["bundle"]


def test_callback_plugin_loads_on_its_own():
    """Ansible loads the callback by path, outside edgesdk: it must need nothing but Ansible."""
    import importlib.util

    from deploy.fleet import ANSIBLE_DIR

    spec = importlib.util.spec_from_file_location("edgesdk_json_cb", ANSIBLE_DIR / "plugins" / "callback" / "edgesdk_json.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.CallbackModule.CALLBACK_NAME == "edgesdk_json"
    assert mod._agent_json({"stdout": 'agent: x\n{"ok": false, "message": "m"}'}) == {"ok": False, "message": "m"}
