"""Monitoring: the board's readings in the stage's metrics, finnchain's Prometheus rules under
``promtool``, the monitoring role (targets from the inventory, bad input refused by name, a
Prometheus the operator runs), and on the emulated cluster: Prometheus scraping every stage,
the dashboard in a real browser, the stage-down and hot-board alerts firing and clearing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from finnchain.boards.catalogue import Catalogue, rated_temperature
from finnchain.runtime.metrics import Metrics, parse
from finnchain.runtime.sensors import find_temperature_sensor, read_celsius

ROOT = Path(__file__).resolve().parents[1]
ROLE = ROOT / "roles" / "monitoring"
RULES = ROLE / "files" / "finnchain.rules.yml"
RULE_TESTS = ROLE / "files" / "finnchain.rules.test.yml"
ARTIFACTS = ROOT / "artifacts" / "monitoring"
PROMETHEUS = "http://127.0.0.1:9090"


def _xadc(root: Path, index: int, name: str, raw: int, offset: int, scale: float) -> Path:
    dev = root / f"iio:device{index}"
    dev.mkdir(parents=True)
    (dev / "name").write_text(f"{name}\n")
    (dev / "in_temp0_raw").write_text(f"{raw}\n")
    (dev / "in_temp0_offset").write_text(f"{offset}\n")
    (dev / "in_temp0_scale").write_text(f"{scale}\n")
    return dev


def test_the_temperature_sensor_is_found_by_name_and_read_as_linux_scales_it(tmp_path):
    # an ADC that is not the system monitor comes first, as it may on a board
    other = tmp_path / "iio:device0"
    other.mkdir(parents=True)
    (other / "name").write_text("ad7476\n")
    (other / "in_voltage0_raw").write_text("12\n")
    # the Zynq-7000's XADC as Linux's xadc driver gives it: 12 bits over 503.975 K
    dev = _xadc(tmp_path, 3, "xadc", raw=2600, offset=-2219, scale=123.040771484)
    assert find_temperature_sensor(tmp_path) == dev
    assert read_celsius(dev) == pytest.approx((2600 - 2219) * 0.123040771484)
    assert 46 < read_celsius(dev) < 47
    # Zynq UltraScale+'s AMS: 16 bits
    us = tmp_path / "us"
    dev = _xadc(us, 1, "ams", raw=42000, offset=-36058, scale=7.771514892)
    assert find_temperature_sensor(us) == dev
    assert read_celsius(dev) == pytest.approx((42000 - 36058) * 7.771514892e-3)
    # no sensor: none, and a read that fails gives none rather than an error
    assert find_temperature_sensor(tmp_path / "missing") is None
    (dev / "in_temp0_raw").write_text("garbage")
    assert read_celsius(dev) is None


def test_a_parts_rated_temperature_is_its_grade():
    cat = Catalogue()
    assert rated_temperature(cat.board("zedboard").part) == 85  # XC7Z020-1CLG484C, commercial
    assert rated_temperature(cat.board("zcu104").part) == 100  # xczu7ev-ffvc1156-2-e, extended
    assert rated_temperature(cat.board("ultra96-v2").part) == 100  # -i, industrial
    assert rated_temperature(cat.board("kv260").part) == 85  # -c
    assert rated_temperature("xa7z020clg400-1-q") == 125


def test_the_stage_exports_the_boards_readings(tmp_path):
    m = Metrics(1, "ab" * 32, "emulate")
    m.sensor = _xadc(tmp_path, 0, "xadc", raw=2800, offset=-2219, scale=123.040771484)
    m.link_bytes_per_s, m.temperature_max_c = 125e6, 85.0
    r = parse(m.render())
    assert r["finnchain_temperature_celsius"] == pytest.approx(71.49, abs=0.01)
    assert r["finnchain_temperature_max_celsius"] == 85
    assert r["finnchain_link_capacity_bytes_per_second"] == 125e6
    with open("/proc/uptime") as f:
        assert abs(r["finnchain_board_uptime_seconds"] - float(f.read().split()[0])) < 5
    cpu = os.times()
    assert 0 < r["process_cpu_seconds_total"] <= cpu.user + cpu.system + 0.01
    assert r["process_start_time_seconds"] == pytest.approx(m.started, abs=0.01)
    # a board without a sensor exports no temperature, rather than a made-up one
    m.sensor = None
    assert parse(m.render()).get("finnchain_temperature_celsius") is None


def _promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        pytest.skip("promtool missing (Debian's prometheus package; .ci/run installs it)")
    return found


def test_the_rules_pass_promtool_and_their_unit_tests(tmp_path):
    promtool = _promtool()
    r = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    rules = yaml.safe_load(RULES.read_text())
    names = {rule.get("record") or rule.get("alert")
             for group in rules["groups"] for rule in group["rules"]}
    assert {"FinnchainStageDown", "FinnchainFailuresRising", "FinnchainStageRestarting",
            "FinnchainLinkSaturated", "FinnchainBoardHot"} <= names
    # every rule has a unit test
    tests = RULE_TESTS.read_text()
    assert [n for n in names if n not in tests] == []
    r = subprocess.run([promtool, "test", "rules", str(RULE_TESTS)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    # and the tests can fail: a stage-down alert that waits 30 s fails them
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    (tmp_path / RULES.name).write_text(RULES.read_text().replace(
        "expr: up{job=\"finnchain\"} == 0\n        for: 10s",
        "expr: up{job=\"finnchain\"} == 0\n        for: 30s"))
    r = subprocess.run([promtool, "test", "rules", str(tmp_path / RULE_TESTS.name)],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "FinnchainStageDown" in r.stdout + r.stderr


def _monitoring_play(inventory: dict, tmp_path: Path, *extra: str
                     ) -> subprocess.CompletedProcess:
    """playbooks/monitoring.yml on an inventory of boards that need not exist (the role runs on
    the controller alone), for a build of three stages."""
    build = tmp_path / "build"
    build.mkdir(exist_ok=True)
    (build / "manifest.json").write_text(json.dumps({"stages": [{}, {}, {}]}))
    inv = tmp_path / "inventory"
    if not inv.exists():
        shutil.copytree(ROOT / "inventory" / "group_vars", inv / "group_vars")
    (inv / "hosts.yml").write_text(yaml.safe_dump(inventory))
    return subprocess.run(
        [str(Path(os.sys.executable).with_name("ansible-playbook")), "playbooks/monitoring.yml",
         "-i", str(inv / "hosts.yml"), "-e", f"finnchain_build={build}", *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=600)


def _boards(**extra_vars) -> dict:
    hosts = {f"zed{i}": {"finnchain_address": f"10.42.0.{10 + i}"} for i in range(1, 5)}
    for host, v in extra_vars.items():
        hosts[host].update(v)
    return {"all": {"children": {"boards": {"hosts": hosts}}}}


def test_the_role_refuses_a_stage_without_a_metrics_port_by_name(tmp_path):
    r = _monitoring_play(_boards(zed2={"finnchain_metrics_port": ""}), tmp_path,
                         "-e", f"monitoring_config_dir={tmp_path / 'prom'}")
    assert r.returncode != 0
    assert "zed2 runs stage 1 but has no metrics port to scrape" in r.stdout, r.stdout[-3000:]
    assert not (tmp_path / "prom").exists()  # refused before anything was written


def test_fab_refuses_a_board_without_a_metrics_port_by_name(tmp_path):
    """``fab status`` and the health checks read each board's metrics port from the same
    inventory: a board that sets none is refused by name, not scraped on a guess."""
    from finnchain.ops.inventory import InventoryError, boards

    inv = tmp_path / "inventory"
    shutil.copytree(ROOT / "inventory" / "group_vars", inv / "group_vars")
    (inv / "hosts.yml").write_text(yaml.safe_dump(_boards(zed3={"finnchain_metrics_port": 9999})))
    assert [b.metrics_port for b in boards(inv / "hosts.yml")] == [9150, 9150, 9999, 9150]
    (inv / "hosts.yml").write_text(yaml.safe_dump(_boards(zed2={"finnchain_metrics_port": None})))
    with pytest.raises(InventoryError, match="zed2 has finnchain_metrics_port None"):
        boards(inv / "hosts.yml")


def test_a_prometheus_of_ones_own_gets_targets_from_the_inventory(tmp_path):
    """monitoring_install false: the targets (one per stage: zed4 has none in a three-stage
    build; zed3's port is its own), the rules and the consoles, which a Prometheus of the
    operator's loads, as promtool checks."""
    promtool = _promtool()
    prom = tmp_path / "prom"
    r = _monitoring_play(_boards(zed3={"finnchain_metrics_port": 9999}), tmp_path,
                         "-e", "monitoring_install=false", "-e", f"monitoring_config_dir={prom}")
    assert r.returncode == 0, r.stdout[-3000:]
    targets = json.loads((prom / "targets" / "finnchain.json").read_text())
    assert targets == [
        {"targets": ["10.42.0.11:9150"], "labels": {"board": "zed1", "stage": "0", "chain": "boards"}},
        {"targets": ["10.42.0.12:9150"], "labels": {"board": "zed2", "stage": "1", "chain": "boards"}},
        {"targets": ["10.42.0.13:9999"], "labels": {"board": "zed3", "stage": "2", "chain": "boards"}}]
    assert (prom / "consoles" / "finnchain.html").is_file()
    assert "rule_files: [" in r.stdout  # what the operator's prometheus.yml needs, said
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "rule_files": [str(prom / "rules" / "finnchain.rules.yml")],
        "scrape_configs": [{"job_name": "finnchain", "file_sd_configs": [
            {"files": [str(prom / "targets" / "finnchain.json")]}]}]}))
    r = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    # a second run changes nothing
    r = _monitoring_play(_boards(zed3={"finnchain_metrics_port": 9999}), tmp_path,
                         "-e", "monitoring_install=false", "-e", f"monitoring_config_dir={prom}")
    assert r.returncode == 0 and "changed=0" in r.stdout, r.stdout[-2000:]


# -- on the emulated cluster: deploy.yml's last play runs the role with Debian's Prometheus --

def _api(path: str, **params) -> dict:
    url = f"{PROMETHEUS}/api/v1/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return body["data"]


def _targets() -> list[dict]:
    return [t for t in _api("targets", state="active")["activeTargets"]
            if t["labels"].get("job") == "finnchain"]


def _scrape_seconds() -> float:
    config = yaml.safe_load(_api("status/config")["yaml"])
    interval = config["global"]["scrape_interval"]
    assert interval.endswith("s"), interval
    return float(interval[:-1])


def _firing(alert: str, board: str) -> str | None:
    for a in _api("alerts")["alerts"]:
        if a["labels"].get("alertname") == alert and a["labels"].get("board") == board:
            return a["state"]
    return None


def _wait(predicate, seconds: float, step: float = 0.25):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()


@pytest.fixture(scope="module")
def monitored(boards, deployed):
    """The deployed chain with Prometheus scraping it (deploy.yml's monitoring play)."""
    from finnchain.ops.inventory import boards as inventory_boards

    hosts = inventory_boards(boards)
    stages = len(json.loads((deployed / "manifest.json").read_text())["stages"])
    return hosts[:stages]


def test_prometheus_scrapes_every_stage_with_its_labels(monitored):
    """Every stage is a target, labelled with its board, stage and chain from the inventory;
    after a restart of Prometheus every target is up again within two scrape intervals."""
    targets = _targets()
    assert sorted((t["labels"]["board"], t["labels"]["stage"], t["labels"]["chain"])
                  for t in targets) == [(b.name, str(b.stage), "boards") for b in monitored]
    assert {t["scrapeUrl"] for t in targets} == {
        f"http://{b.address}:{b.metrics_port}/metrics" for b in monitored}
    subprocess.run(["service", "prometheus", "restart"], check=True, capture_output=True)
    ready = _wait(lambda: _get_ok(f"{PROMETHEUS}/-/ready"), 30)
    assert ready, "Prometheus did not come back"
    t0, interval = time.monotonic(), _scrape_seconds()
    up = _wait(lambda: len(_targets()) == len(monitored)
               and all(t["health"] == "up" for t in _targets()), 2 * interval + 1)
    elapsed = time.monotonic() - t0
    assert up, _targets()
    assert elapsed <= 2 * interval + 1, elapsed
    (ARTIFACTS).mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "targets-up.json").write_text(json.dumps(
        {"scrape_interval_s": interval, "all_up_after_s": round(elapsed, 2)}))


def _get_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("Debian's chromium and chromium-driver are missing (.ci/run installs them)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1400,900"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def test_the_dashboard_shows_every_board_running_in_a_browser(monitored, deployed, tmp_path):
    """Headless Chromium opens finnchain's console while `fab benchmark` runs: every board's
    panel shows a non-zero frame rate and its temperature; a screenshot is kept."""
    from selenium.webdriver.common.by import By

    from clusterkit import BIN

    flow = subprocess.Popen([str(BIN / "fab"), "benchmark", "--build", str(deployed),
                             "--duration", "40", "--source", "dataset", "--out", str(tmp_path)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    driver = _browser()
    try:
        # the rate needs two scrapes of a moving counter: wait for them, in Prometheus' words
        assert _wait(lambda: len(_api("query", query="finnchain:stage_frames:rate1m > 0")
                                 ["result"]) == len(monitored), 60), "no rate in Prometheus"
        driver.get(f"{PROMETHEUS}/consoles/finnchain.html")
        rates = {}
        for b in monitored:
            panel = driver.find_element(By.ID, f"board-{b.name}")
            rates[b.name] = float(panel.find_element(By.CLASS_NAME, "rate").text)
            assert "°C" in panel.find_element(By.CLASS_NAME, "temperature").text, b.name
        assert all(r > 0 for r in rates.values()), rates
        chain = driver.find_element(By.ID, "chain-boards").text
        assert f"{len(monitored)} of {len(monitored)} stages up" in chain, chain
        time.sleep(2)  # the graphs draw from Prometheus' API in the page's own scripts
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(ARTIFACTS / "dashboard.png"))
        driver.get(f"{PROMETHEUS}/consoles/finnchain-board.html?board={monitored[0].name}")
        assert "Stage 0 of chain boards" in driver.find_element(By.TAG_NAME, "body").text
    finally:
        driver.quit()
        out, _ = flow.communicate(timeout=120)
    assert flow.returncode == 0, out[-2000:]


def test_a_stopped_stage_fires_the_stage_down_alert_and_clears_after_fab_start(
        boards, deployed, monitored):
    """One stage stopped: its target shows as down (not missing) and FinnchainStageDown fires
    within its 10 s, one scrape and one evaluation interval; `fab start` clears it."""
    from clusterkit import fab, ssh

    victim = monitored[1]
    rules = yaml.safe_load(RULES.read_text())
    down = next(r for g in rules["groups"] for r in g["rules"]
                if r.get("alert") == "FinnchainStageDown")
    window = float(down["for"].rstrip("s"))
    config = yaml.safe_load(_api("status/config")["yaml"])
    evaluation = float(config["global"]["evaluation_interval"].rstrip("s"))
    r = ssh(victim.ssh_host, f"sudo -n service {victim.service} stop")
    assert r.returncode == 0, r.stderr
    t0 = time.monotonic()
    try:
        fired = _wait(lambda: _firing("FinnchainStageDown", victim.name) == "firing",
                      window + _scrape_seconds() + evaluation + 10)
        elapsed = time.monotonic() - t0
        assert fired, _api("alerts")
        # polled every 0.25 s, and the stop itself takes a moment: a second of slack
        assert elapsed <= window + _scrape_seconds() + evaluation + 1, elapsed
        health = {t["labels"]["board"]: t["health"] for t in _targets()}
        assert health[victim.name] == "down" and len(health) == len(monitored), health
        others = [b.name for b in monitored if b is not victim]
        assert all(_firing("FinnchainStageDown", b) is None for b in others)
    finally:
        r = fab("start", "--inventory", str(boards), "--build", str(deployed))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert _wait(lambda: _firing("FinnchainStageDown", victim.name) is None,
                 2 * _scrape_seconds() + evaluation + 5), _api("alerts")
    (ARTIFACTS / "stage-down.json").parent.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "stage-down.json").write_text(json.dumps(
        {"for_s": window, "scrape_s": _scrape_seconds(), "evaluation_s": evaluation,
         "fired_after_s": round(elapsed, 2)}))


def test_a_hot_board_fires_the_temperature_alert_from_its_own_xadc(monitored):
    """The emulated board's XADC follows its load and the air around it: a board made hot
    (`finnchain emu heat`) comes within 10 °C of its part's rating and fires
    FinnchainBoardHot; cooled, it clears."""
    from clusterkit import finnchain

    hot = monitored[-1]
    reading = _api("query", query=f"finnchain_temperature_celsius{{board='{hot.name}'}}")
    assert reading["result"], "the emulated board exports no temperature"
    before = float(reading["result"][0]["value"][1])
    assert 30 < before < 70, before
    r = finnchain("emu", "heat", hot.name, "80")
    assert r.returncode == 0, r.stderr
    try:
        assert _wait(lambda: _firing("FinnchainBoardHot", hot.name) == "firing", 60), \
            _api("query", query="finnchain:board_temperature:headroom_celsius")
        assert all(_firing("FinnchainBoardHot", b.name) is None for b in monitored
                   if b is not hot)
    finally:
        r = finnchain("emu", "heat", hot.name, "default")
        assert r.returncode == 0, r.stderr
    assert _wait(lambda: _firing("FinnchainBoardHot", hot.name) is None, 60)
