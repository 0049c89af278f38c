"""The timer's script run for real as the service runs it, on the paths that need no engine: configuration
checks, the blackout window, the lock, and a failed engine call recorded in the metrics."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from unit_support import install_role_script

REPO = Path(__file__).resolve().parents[3]
WHOLE_DAY = [{"name": "backup", "start": "00:00", "end": "12:00"}, {"name": "backup", "start": "12:00", "end": "00:00"}]


@pytest.fixture
def installed(tmp_path):
    """The script with its helper files beside it, as the role installs them (the list is the role's)."""
    return install_role_script(tmp_path / "lib", "docker_prune_timer", "docker_prune.py",
                               "__docker_prune_timer_helpers")


def write_config(tmp_path: Path, **overrides) -> Path:
    config = {
        "docker_socket": str(tmp_path / "no-engine.sock"),
        "keep_label": "postmortem.remediation.keep",
        "textfile": str(tmp_path / "textfile" / "docker_prune.prom"),
        "lock_file": str(tmp_path / "prune.lock"),
        "windows": [],
        "tiers": {"build_cache": {"enabled": True, "until": "24h"}, "volumes": {"enabled": False}},
        "timeout": 5,
    }
    config.update(overrides)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def run(script: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=60, check=False)


def metrics(tmp_path: Path) -> str:
    return (tmp_path / "textfile" / "docker_prune.prom").read_text()


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"tiers": {"build_cache": {"enabled": True, "until": "a day"}}}, "duration 'a day'"),
        ({"windows": [{"start": "25:00", "end": "02:00"}]}, "time of day '25:00'"),
        ({"windows": [{"start": "01:00"}]}, "'end'"),
        # Issue 10.22: types and keys are checked; a string is never read as a boolean.
        ({"tiers": {"volumes": {"enabled": "false"}}}, 'tiers.volumes.enabled: expected bool, got "false"'),
        ({"tiers": {"build_cache": {"enabled": 1}}}, "tiers.build_cache.enabled: expected bool, got 1"),
        ({"tiers": {"build_cache": {"enabled": True, "untill": "1h"}}}, "tiers.build_cache: unknown key(s) untill"),
        ({"tiers": {"networks": {"enabled": True}}}, "tiers: unknown tier(s) networks"),
        ({"tiers": {"build_cache": True}}, "tiers.build_cache: expected an object, got bool"),
        ({"keep_lable": "x"}, "configuration: unknown key(s) keep_lable"),
        ({"timeout": "600"}, 'configuration.timeout: expected int, got "600"'),
        ({"timeout": True}, "configuration.timeout: expected int, got true"),
        ({"build_cache_all": "no"}, 'configuration.build_cache_all: expected bool, got "no"'),
        ({"windows": [{"start": "01:00", "end": "02:00", "days": "mon"}]}, "windows[0]: unknown key(s) days"),
    ],
)
def test_check_config_refuses_a_bad_configuration(installed, tmp_path, overrides, fragment):
    result = run(installed, "--check-config", "--config", str(write_config(tmp_path, **overrides)))
    assert result.returncode == 2
    assert "FAILED: unusable configuration" in result.stdout
    assert fragment in result.stdout


def test_check_config_accepts_a_good_configuration(installed, tmp_path):
    result = run(installed, "--check-config", "--config", str(write_config(tmp_path)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is valid: tiers build_cache" in result.stdout


def test_the_roles_template_rendered_with_its_defaults_passes_the_check(installed, tmp_path):
    """The role validates the file it writes with --check-config: its own template must pass the stricter check."""
    role = REPO / "roles" / "docker_prune_timer"
    rendered = tmp_path / "config.json"
    playbook = tmp_path / "render.yml"
    playbook.write_text(json.dumps([{
        "name": "Render the configuration", "hosts": "localhost", "gather_facts": False,
        "vars_files": [str(role / "defaults" / "main.yml"), str(role / "vars" / "main.yml")],
        "tasks": [{"name": "Render", "ansible.builtin.template": {
            "src": str(role / "templates" / "config.json.j2"), "dest": str(rendered), "mode": "0644"}}],
    }]))
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible"),
           "ANSIBLE_HOME": str(tmp_path / "ansible")}
    played = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                             # A string, as an inventory or -e gives it: the template still writes a JSON boolean.
                             "-e", "docker_prune_timer_prune_volumes=yes", str(playbook)],
                            capture_output=True, text=True, timeout=120, check=False, env=env)
    assert played.returncode == 0, played.stdout + played.stderr
    assert json.loads(rendered.read_text())["tiers"]["volumes"]["enabled"] is True
    result = run(installed, "--check-config", "--config", str(rendered))
    assert result.returncode == 0, result.stdout
    assert "is valid: tiers build_cache, stopped_containers, dangling_images, volumes" in result.stdout


def test_inside_the_window_it_skips_says_why_and_counts_the_skip(installed, tmp_path):
    result = run(installed, "--config", str(write_config(tmp_path, windows=WHOLE_DAY)))
    assert result.returncode == 0
    assert "skipped:" in result.stdout
    assert "inside the backup window" in result.stdout
    text = metrics(tmp_path)
    assert 'docker_prune_last_run_skipped{reason="window backup"} 1' in text
    assert "docker_prune_last_run_success 1" in text


def test_another_holder_of_the_lock_makes_it_stand_aside(installed, tmp_path):
    config = write_config(tmp_path)
    lock_file = str(tmp_path / "prune.lock")
    holder = subprocess.Popen(["flock", lock_file, "sleep", "5"])
    try:
        for _attempt in range(50):
            if Path(lock_file).exists():
                break
            subprocess.run(["sleep", "0.1"], check=True)
        result = run(installed, "--config", str(config))
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 0
    assert "another prune or reclaim holds" in result.stdout
    assert not (tmp_path / "textfile" / "docker_prune.prom").exists()


def test_a_failed_run_exits_1_and_keeps_the_last_success_time(installed, tmp_path):
    textfile = tmp_path / "textfile" / "docker_prune.prom"
    textfile.parent.mkdir()
    textfile.write_text("docker_prune_last_success_timestamp_seconds 1700000000\n")
    result = run(installed, "--config", str(write_config(tmp_path)))
    assert result.returncode == 1
    assert "FAILED after" in result.stdout
    assert "no-engine.sock" in result.stdout
    text = metrics(tmp_path)
    assert "docker_prune_last_run_success 0" in text
    assert "docker_prune_last_success_timestamp_seconds 1700000000" in text
    assert sorted(p.name for p in textfile.parent.iterdir()) == ["docker_prune.prom"]


def test_a_failure_in_a_later_tier_keeps_what_the_earlier_tiers_did_in_the_metrics(installed, tmp_path, fake_engine):
    # fake_engine (tests/unit/conftest.py) answers one /build/prune, then lists no containers while it counts one.
    config = write_config(tmp_path, docker_socket=str(tmp_path / "docker.sock"),
                          tiers={"build_cache": {"enabled": True, "until": "24h"},
                                 "dangling_images": {"enabled": True, "until": "1h"}})
    result = run(installed, "--config", str(config))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED after" in result.stdout
    assert "in tier dangling_images" in result.stdout
    assert "listed no containers but counts 1" in result.stdout
    assert "the tiers before it: build_cache" in result.stdout
    text = metrics(tmp_path)
    assert "docker_prune_last_run_success 0" in text
    assert 'docker_prune_removed_objects{kind="build_cache"} 1' in text
    assert [path for method, path in fake_engine.requests if method != "GET"] == ["/build/prune"]


def test_an_unexpected_engine_answer_in_a_later_tier_keeps_what_the_earlier_tiers_did(
        installed, tmp_path, fake_engine, monkeypatch):
    # After the build cache tier the engine lists its images as strings (no engine does): an error nothing expects.
    # It was recorded as a failed run without the build cache it had removed.
    answer = fake_engine.answer

    def odd_images(method, path):
        if path == "/images/json" and ("POST", "/build/prune") in fake_engine.requests:
            fake_engine.requests.append((method, path))
            return 200, ["sha256:a"]
        if path == "/containers/json":
            fake_engine.requests.append((method, path))
            return 200, [{"Id": "c1", "Names": ["/web"]}]  # a plausible view: the guard does not refuse
        return answer(method, path)

    monkeypatch.setattr(fake_engine, "answer", odd_images)
    config = write_config(tmp_path, docker_socket=str(tmp_path / "docker.sock"),
                          tiers={"build_cache": {"enabled": True, "until": "24h"},
                                 "dangling_images": {"enabled": True, "until": "1h"}})
    result = run(installed, "--config", str(config))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "in tier dangling_images: AttributeError" in result.stdout, result.stdout
    assert "the tiers before it: build_cache" in result.stdout
    assert 'docker_prune_removed_objects{kind="build_cache"} 1' in metrics(tmp_path)


# Every run that is not skipped for the lock leaves its outcome in the metrics, so that DockerPruneTimerFailing pages
# within its `for:` instead of DockerPruneTimerStale two days later; a metrics file that cannot be written is said.
def test_an_unusable_configuration_is_recorded_as_a_failed_run(installed, tmp_path):
    textfile = tmp_path / "textfile" / "docker_prune.prom"
    textfile.parent.mkdir()
    textfile.write_text("docker_prune_last_success_timestamp_seconds 1700000000\n")
    result = run(installed, "--config", str(write_config(tmp_path, timeout=0)))
    assert result.returncode == 2 and "FAILED: unusable configuration" in result.stdout
    text = metrics(tmp_path)
    assert "docker_prune_last_run_success 0" in text
    assert "docker_prune_last_success_timestamp_seconds 1700000000" in text


def test_an_unexpected_error_is_a_failed_run_not_a_traceback(installed, tmp_path):
    (tmp_path / "not-a-dir").write_text("a file where the lock's directory should be\n")
    result = run(installed, "--config", str(write_config(tmp_path, lock_file=str(tmp_path / "not-a-dir/prune.lock"))))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "FAILED after" in result.stdout and "not-a-dir" in result.stdout
    assert "docker_prune_last_run_success 0" in metrics(tmp_path)


def test_sigterm_while_the_engine_hangs_is_a_failed_run(installed, tmp_path):
    hanging = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # accepts the connection, never answers
    hanging.bind(str(tmp_path / "hanging.sock"))
    hanging.listen(1)
    try:
        config = write_config(tmp_path, docker_socket=str(tmp_path / "hanging.sock"), timeout=60)
        process = subprocess.Popen([sys.executable, str(installed), "--config", str(config)], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        # Signalled once the script waits on the engine (its handler is set by then): a fixed 1.5 s was a race.
        hanging.settimeout(60)
        connection = hanging.accept()[0]
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
        connection.close()
    finally:
        hanging.close()
    assert process.returncode == 1, out + err
    assert "terminated by signal 15" in out
    assert "docker_prune_last_run_success 0" in metrics(tmp_path)


def test_a_metrics_file_that_cannot_be_written_is_said_and_exits_3(installed, tmp_path):
    (tmp_path / "textfile" / "docker_prune.prom").mkdir(parents=True)  # a directory where the file should be
    result = run(installed, "--config", str(write_config(tmp_path, windows=WHOLE_DAY)))
    assert result.returncode == 3, result.stdout + result.stderr
    assert "skipped:" in result.stdout  # how the run itself ended comes first
    assert "FAILED to write the metrics file" in result.stdout and "Traceback" not in result.stderr
