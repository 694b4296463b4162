"""Verify the bigbluebutton role on the molecule host.

File checks go through `podman exec` (testinfra's podman backend). The API
checks go from this host over HTTPS to nginx on the published
127.0.0.1:18543, which proxies /bigbluebutton to the TEST-ONLY bbb-web
stand-in on 127.0.0.1:8090 inside the container.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import testinfra
import yaml

NAME = "smeeton-mol-bbb"
FQDN = "bbb.bigbluebutton.molecule.smeeton.test"
testinfra_hosts = [f"podman://{NAME}"]

SCENARIO = Path(__file__).resolve().parent.parent
REPO = SCENARIO.parent.parent
sys.path.insert(0, str(REPO / "module_utils"))
import bbb_api

API = "https://127.0.0.1:18543/bigbluebutton/api"


def _ephemeral(name):
    directory = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY")
    if not directory:
        pytest.fail("MOLECULE_EPHEMERAL_DIRECTORY is not set: run through `molecule verify`")
    return Path(directory, name).read_text().split()[0]


@pytest.fixture(scope="module")
def secret():
    return _ephemeral("bigbluebutton_secret")


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory):
    pem = testinfra.get_host(f"podman://{NAME}").file("/etc/ssl/smeeton-test/fullchain.pem")
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    path.write_text(pem.content_string)
    return str(path)


def _props(host, path):
    out = {}
    for line in host.file(path).content_string.splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


# --- override files ---------------------------------------------------------


def test_bbb_web_properties(host, secret):
    f = host.file("/etc/bigbluebutton/bbb-web.properties")
    assert (f.user, f.group, f.mode) == ("root", "bigbluebutton", 0o640)
    props = _props(host, "/etc/bigbluebutton/bbb-web.properties")
    assert props["bigbluebutton.web.serverURL"] == f"https://{FQDN}"
    assert props["securitySalt"] == secret
    assert props["supportedChecksumAlgorithms"] == "sha256,sha384,sha512"
    assert props["disableRecordingDefault"] == "false"
    assert props["defaultGuestPolicy"] == "ALWAYS_ACCEPT"
    assert props["allowRevealOfBBBVersion"] == "true"
    # The package's defaults file is untouched.
    defaults = _props(host, "/usr/share/bbb-web/WEB-INF/classes/bigbluebutton.properties")
    assert defaults["securitySalt"] == "330a8b08c3b4c61533e1d0c5ce1ac88f"


def test_html5_override_is_deep_merged_with_lists_replaced(host):
    f = host.file("/etc/bigbluebutton/bbb-html5.yml")
    assert f.mode == 0o644
    data = yaml.safe_load(f.content_string)
    app = data["public"]["app"]
    assert app["appName"] == "SmeetOn (molecule)"  # group dict
    assert app["clientTitle"] == "SmeetOn molecule host"  # host dict merged in
    assert app["breakouts"]["allowUserChooseRoomByDefault"] is True
    assert data["public"]["media"]["sipjsHackViaWs"] is True  # role's required setting
    profiles = data["public"]["kurento"]["cameraProfiles"]
    assert [p["id"] for p in profiles] == ["low"]  # list replaced, not appended


def test_apps_akka_override_has_secret_and_https_api(host, secret):
    f = host.file("/etc/bigbluebutton/bbb-apps-akka.conf")
    assert (f.user, f.group, f.mode) == ("root", "bigbluebutton", 0o640)
    text = f.content_string
    assert 'include "/usr/share/bbb-apps-akka/conf/application.conf"' in text
    assert f'sharedSecret="{secret}"' in text
    assert f'bbbWebAPI="https://{FQDN}/bigbluebutton/api"' in text


def test_webhooks_secret_like_setsecret(host, secret):
    f = host.file("/usr/local/bigbluebutton/bbb-webhooks/config/default.yml")
    assert f.mode == 0o640
    data = yaml.safe_load(f.content_string)
    assert data["bbb"]["sharedSecret"] == secret
    assert data["server"]["port"] == 3005  # rest of the file kept


def test_no_secret_world_readable(host, secret):
    out = host.check_output(
        "grep -rlF -- %s /etc /usr/local/bigbluebutton /opt 2>/dev/null || true", secret
    )
    for path in out.split():
        assert host.file(path).mode & 0o007 == 0, path


def test_turn_stun_servers_xml(host):
    f = host.file("/etc/bigbluebutton/turn-stun-servers.xml")
    assert (f.user, f.group, f.mode) == ("root", "bigbluebutton", 0o640)
    turn = _ephemeral("turn_secret")
    text = f.content_string
    assert f"turn:{FQDN}:3478" in text
    assert f"turns:{FQDN}:443?transport=tcp" in text
    assert turn in text
    host.run_expect([0], "xmllint --noout /etc/bigbluebutton/turn-stun-servers.xml")


def test_sfu_override_announces_public_ip(host):
    ip = host.interface("eth0").addresses[0]
    data = yaml.safe_load(
        host.file("/etc/bigbluebutton/bbb-webrtc-sfu/production.yml").content_string
    )
    assert data["freeswitch"] == {"ip": ip, "sip_ip": ip}
    assert data["mediasoup"]["webrtc"]["listenIps"] == [{"ip": "0.0.0.0", "announcedIp": ip}]
    assert data["mediasoup"]["plainRtp"]["listenIp"] == {"ip": "0.0.0.0", "announcedIp": ip}
    assert str(data["mediasoup"]["worker"]["rtcMinPort"]) == "16384"


def test_freeswitch_edits_and_apply_config(host):
    ip = host.interface("eth0").addresses[0]
    fs = "/opt/freeswitch/etc/freeswitch"
    vars_xml = host.file(f"{fs}/vars.xml").content_string
    assert f'data="external_rtp_ip={ip}"' in vars_xml
    assert f'data="external_sip_ip={ip}"' in vars_xml
    ext = host.file(f"{fs}/sip_profiles/external.xml").content_string
    assert f'name="ws-binding" value="{ip}:5066"' in ext
    assert f'name="wss-binding" value="{ip}:7443"' in ext
    assert 'name="ext-rtp-ip" value="$${local_ip_v4}"' in ext  # no NAT here
    switch = host.file(f"{fs}/autoload_configs/switch.conf.xml").content_string
    assert 'name="rtp-end-port" value="32768"' in switch
    assert (
        f"proxy_pass http://{ip}:5066;"
        in host.file("/usr/share/bigbluebutton/nginx/sip.nginx").content_string
    )
    script = host.file("/etc/bigbluebutton/bbb-conf/apply-config.sh")
    assert script.mode == 0o755
    host.run_expect([0], "bash -n /etc/bigbluebutton/bbb-conf/apply-config.sh")
    # Running it (as bbb-conf does after a package upgrade) keeps the values
    # (xmlstarlet may rewrite the XML declaration, so compare values).
    host.run_expect([0], "/etc/bigbluebutton/bbb-conf/apply-config.sh")
    assert f'data="external_rtp_ip={ip}"' in host.file(f"{fs}/vars.xml").content_string
    ext = host.file(f"{fs}/sip_profiles/external.xml").content_string
    assert f'name="wss-binding" value="{ip}:7443"' in ext
    host.run_expect([0], f"xmllint --noout {fs}/vars.xml {fs}/sip_profiles/external.xml")


def test_recording_override_and_retention(host):
    data = yaml.safe_load(host.file("/etc/bigbluebutton/recording/recording.yml").content_string)
    assert data == {"playback_host": FQDN, "playback_protocol": "https"}
    cron = host.file("/etc/cron.d/smeeton-bigbluebutton-retention").content_string
    assert "-mtime +21" in cron
    assert "/var/bigbluebutton/recording/raw" in cron
    assert "/var/bigbluebutton/published/presentation" in cron


def test_realtime_dropins_in_container(host):
    conf = host.file("/etc/systemd/system/freeswitch.service.d/smeeton-no-realtime.conf")
    assert "CPUSchedulingPolicy=" in conf.content_string


def test_firewall_rules(host):
    # The media range is this role's; 80/443 belong to the tls role (one owner per rule).
    rules = host.check_output("ufw status")
    assert "16384:32768/udp" in rules
    assert "(bigbluebutton)" not in "\n".join(r for r in rules.splitlines() if "/tcp" in r)


def test_no_restart_pending(host):
    assert host.check_output("find /var/lib/smeeton/bigbluebutton/restart-pending -type f") == ""


# --- the API over HTTPS through nginx ------------------------------------------


def test_api_with_vault_secret_succeeds(secret, ca_file):
    client = bbb_api.BBBClient(API, secret, algorithm="sha256", ca_path=ca_file)
    assert client.index().data["returncode"] == "SUCCESS"
    assert client.get_meetings().data["returncode"] == "SUCCESS"


def test_api_with_other_secret_fails_with_checksum_error(ca_file):
    client = bbb_api.BBBClient(API, "x" * 48, algorithm="sha256", ca_path=ca_file)
    with pytest.raises(bbb_api.BBBApiError) as err:
        client.get_meetings()
    assert err.value.message_key == "checksumError"


def test_sha1_is_not_accepted(secret, ca_file):
    client = bbb_api.BBBClient(API, secret, algorithm="sha1", ca_path=ca_file)
    with pytest.raises(bbb_api.BBBApiError) as err:
        client.get_meetings()
    assert err.value.message_key == "checksumError"


# --- disruption guard ------------------------------------------------------------


def _converge(*extra_vars, check=False):
    inventory = os.environ.get("MOLECULE_INVENTORY_FILE")
    if not inventory:
        pytest.fail("MOLECULE_INVENTORY_FILE is not set: run through `molecule verify`")
    cmd = ["ansible-playbook", "-i", inventory, str(SCENARIO / "converge.yml")]
    if check:
        cmd.append("--check")
    for ev in extra_vars:
        cmd += ["-e", ev]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)


CHANGE = '{"bigbluebutton_html5_config_host": {"public": {"app": {"clientTitle": "changed"}}}}'


def test_guard_refuses_restart_during_meeting_then_catches_up(host, secret, ca_file):
    client = bbb_api.BBBClient(API, secret, algorithm="sha256", ca_path=ca_file)
    client.create("guard-test", "Guard test", moderatorPW="mpw", attendeePW="apw")
    try:
        client.join("guard-test", "Someone", password="mpw")
        result = _converge(CHANGE)
        output = result.stdout + result.stderr
        assert result.returncode != 0, output
        assert "Not restarting BigBlueButton" in output, output
        assert "1 participant(s)" in output, output
        assert "bigbluebutton_force_restart" in output, output
        # The file is written, the restart is remembered.
        assert (
            "clientTitle: changed" in host.file("/etc/bigbluebutton/bbb-html5.yml").content_string
        )
        assert host.file("/var/lib/smeeton/bigbluebutton/restart-pending/bbb-apps-akka").exists
        # No secret in the output.
        assert secret not in output

        # Forced: the restart goes ahead although the meeting runs.
        forced = _converge(CHANGE, "bigbluebutton_force_restart=true")
        assert forced.returncode == 0, forced.stdout + forced.stderr
        assert not host.file("/var/lib/smeeton/bigbluebutton/restart-pending/bbb-apps-akka").exists
    finally:
        client.end("guard-test", password="mpw")

    # Back to the inventory's values with no meeting: converges, nothing pending.
    back = _converge()
    assert back.returncode == 0, back.stdout + back.stderr
    assert host.check_output("find /var/lib/smeeton/bigbluebutton/restart-pending -type f") == ""


def test_pending_restart_is_retried_on_next_run(host):
    host.run_expect([0], "touch /var/lib/smeeton/bigbluebutton/restart-pending/bbb-web")
    result = _converge()
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "still pending from an earlier run" in output, output
    assert not host.file("/var/lib/smeeton/bigbluebutton/restart-pending/bbb-web").exists


@pytest.mark.parametrize(
    ("extra_var", "named"),
    [
        ("bigbluebutton_secret=short", "bigbluebutton_secret"),
        ("bigbluebutton_release=focal-270", "bigbluebutton_release"),
        ("bigbluebutton_install_packages=true", "bigbluebutton_install_packages"),
        ('{"bigbluebutton_checksum_algorithms": ["md5"]}', "bigbluebutton_checksum_algorithms"),
        ("bigbluebutton_public_ip=not-an-ip", "bigbluebutton_public_ip"),
    ],
    ids=["short-secret", "release", "debian-install", "algorithm", "public-ip"],
)
def test_preflight_rejects_bad_values_before_any_change(host, extra_var, named):
    watched = "/etc/bigbluebutton /opt/freeswitch/etc /usr/share/bigbluebutton/nginx"
    before = host.check_output(f"find {watched} -type f -exec sha256sum {{}} + | sort")
    result = _converge(extra_var)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert named in output, output
    assert "changed=0" in output, output
    assert host.check_output(f"find {watched} -type f -exec sha256sum {{}} + | sort") == before
