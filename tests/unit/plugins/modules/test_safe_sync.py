"""safe_sync against real rsync and real directories: every guard is a row that fails if the guard is removed."""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ansible.module_utils.basic import AnsibleModule
from guard_module_runner import (
    finish_module,
    kill_processes_naming,
    load,
    make_mirror,
    processes_naming,
    require_program,
    run_module,
    start_module,
    tree,
    wait_for_file,
)

RSYNC = require_program("rsync", "rsync")
safe_sync = load("safe_sync")
ARCHES = ("amd64", "i386", "arm64")
FILES_PER_ARCH = 20


@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    """A build tree and a published mirror of three architectures; the build of amd64 has moved on by one package."""
    # Published as built: same size, same time.
    make_mirror(tmp_path, ARCHES, FILES_PER_ARCH, name="pkg{i}_{arch}.deb", mtime=1_700_000_000)
    (tmp_path / "build/debian/amd64/pkg0_amd64.deb").unlink()
    (tmp_path / "build/debian/amd64/pkg20_amd64.deb").write_text("amd64 20")
    return tmp_path


def sync_args(root: Path, repo: str = "debian", arch: str = "amd64", **extra: Any) -> dict[str, Any]:
    """The arguments a playbook builds from its variables, the way the incident's script did."""
    args = {
        "src": f"{root}/build/{repo}/{arch}",
        "dest": f"{root}/mirror/{repo}/{arch}",
        "expect_suffix": f"{repo}/{arch}",
    }
    args.update(extra)
    return args


# --- refusals: nothing may change at the destination --------------------------------------------------------
REFUSALS = [
    # (case, argument changes, words the reason must contain)
    ("empty arch", {"arch": ""}, ["src '", "/build/debian/': the last component (after 'debian') is empty"]),
    ("empty repo", {"repo": ""}, ["the component after 'build' is empty"]),
    ("blank arch", {"arch": " "}, ["whitespace only"]),
    ("dotdot arch", {"arch": ".."}, ["is '..'"]),
    ("dest of another arch", {"dest_arch": "i386"}, ["dest '", "'i386' where 'amd64' was expected"]),
    ("trailing slash", {"src_suffix": "/"}, ["the last component (after 'amd64') is empty"]),
    ("missing source", {"src_arch": "s390x", "expect": "s390x", "dest_arch": "s390x"},
     ["source directory", "does not exist"]),
    ("too few source files", {"min_source_files": FILES_PER_ARCH + 1}, ["source files: 20 files, fewer than the "
                                                                        "minimum of 21"]),
    ("more deletions than max_delete", {"max_delete": 0},
     ["deletions at", "1 files planned, more than the bound of 0"]),
    ("deletion ratio", {"max_delete_ratio": 0.01}, ["(5.0 %) planned, more than the bound of 1.0 %"]),
]


def build_case(root: Path, changes: dict[str, Any]) -> dict[str, Any]:
    changes = dict(changes)
    repo = changes.pop("repo", "debian")
    arch = changes.pop("arch", "amd64")
    args = sync_args(root, repo, arch)
    if "src_arch" in changes:
        args["src"] = f"{root}/build/{repo}/{changes.pop('src_arch')}"
    if "dest_arch" in changes:
        args["dest"] = f"{root}/mirror/{repo}/{changes.pop('dest_arch')}"
    if "expect" in changes:
        args["expect_suffix"] = f"{repo}/{changes.pop('expect')}"
    args["src"] += changes.pop("src_suffix", "")
    args.update(changes)
    return args


@pytest.mark.parametrize(("case", "changes", "words"), REFUSALS, ids=[r[0] for r in REFUSALS])
@pytest.mark.parametrize("check_mode", [False, True], ids=["apply", "check"])
def test_refused_and_nothing_touched(mirror: Path, case: str, changes: dict[str, Any], words: list[str],
                                     check_mode: bool) -> None:
    before = tree(mirror / "mirror")
    result = run_module(safe_sync, build_case(mirror, changes), check_mode=check_mode)
    assert result["failed"] is True
    assert result["refused"] is True
    assert result["changed"] is False
    for word in words:
        assert word in result["msg"], result["msg"]
    assert result["msg"] == result["reason"] == result["guard"]["reason"]
    assert tree(mirror / "mirror") == before


def test_empty_arch_would_have_deleted_every_other_architecture(mirror: Path) -> None:
    """The incident itself: without the path check, the bounds still stop the parent-directory sync."""
    args = sync_args(mirror)
    args.update(src=f"{mirror}/build/debian", dest=f"{mirror}/mirror/debian", expect_suffix="debian")
    (mirror / "build/debian/i386").rename(mirror / "i386.moved")  # the parent now lacks an architecture
    before = tree(mirror / "mirror")
    result = run_module(safe_sync, args)
    assert result["refused"] is True
    assert result["plan"]["delete_count"] == FILES_PER_ARCH + 1
    assert result["deleted"] == FILES_PER_ARCH + 1
    assert tree(mirror / "mirror") == before


def test_report_mode_returns_the_refusal_without_failing(mirror: Path) -> None:
    result = run_module(safe_sync, dict(sync_args(mirror, arch=""), on_refusal="report"))
    assert result.get("failed", False) is False
    assert result["refused"] is True
    assert "is empty" in result["reason"]


# --- allowed syncs -----------------------------------------------------------------------------------------
def test_check_mode_returns_the_plan_and_changes_nothing(mirror: Path) -> None:
    before = tree(mirror / "mirror")
    result = run_module(safe_sync, sync_args(mirror), check_mode=True, diff=True)
    assert result["changed"] is True
    assert result["refused"] is False
    assert result["plan"] == {"source_files": 20, "dest_files": 20, "transfer_count": 1, "delete_count": 1,
                              "delete_dir_count": 0, "delete_ratio": 0.05}
    assert result["transferred_files"] == ["pkg20_amd64.deb"]
    assert result["deleted_files"] == ["pkg0_amd64.deb"]
    assert "--dry-run" in result["cmd"]
    assert "*deleting   pkg0_amd64.deb" in result["diff"]["prepared"]
    assert ">f+++++++++ pkg20_amd64.deb" in result["diff"]["prepared"]
    assert tree(mirror / "mirror") == before


def recorded_commands(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every rsync command line the module runs, in order (they still run for real)."""
    commands: list[list[str]] = []
    real_run_command = AnsibleModule.run_command

    def recording_run_command(self: AnsibleModule, args: list[str], **kwargs: Any) -> tuple[int, str, str]:
        commands.append(list(args))
        return real_run_command(self, args, **kwargs)

    monkeypatch.setattr(AnsibleModule, "run_command", recording_run_command)
    return commands


def test_sync_within_bounds_touches_only_that_architecture(mirror: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    others = {arch: tree(mirror / "mirror/debian" / arch) for arch in ARCHES if arch != "amd64"}
    for side in ("build", "mirror"):  # directories published long ago: a deletion must not leave a new time behind
        os.utime(mirror / side / "debian/amd64", (1_700_000_000, 1_700_000_000))
    commands = recorded_commands(monkeypatch)
    result = run_module(safe_sync, sync_args(mirror))
    assert result["changed"] is True
    assert (result["transferred"], result["deleted"]) == (1, 1)
    dry_run, transfer, deletion, times = commands
    assert "--dry-run" in dry_run and "--delete" in dry_run
    # The real run: a transfer that cannot delete, then the planned list and nothing else, then directory times.
    assert not [arg for arg in transfer + times if arg.startswith("--delete")]
    assert "--delete-missing-args" in deletion and "--max-delete=1" in deletion
    assert not [arg for arg in deletion if arg.startswith("--delete") and arg != "--delete-missing-args"]
    assert "--ignore-missing-args" in times
    assert tree(mirror / "mirror/debian/amd64") == tree(mirror / "build/debian/amd64")
    assert {arch: tree(mirror / "mirror/debian" / arch) for arch in others} == others
    again = run_module(safe_sync, sync_args(mirror))
    assert again["changed"] is False, again.get("diff")
    assert "--dry-run" in again["cmd"]  # nothing planned: the real run is skipped


def in_sync(src: Path, dest: Path) -> list[str]:
    """What rsync itself still finds different (content, times, permissions, extra files): [] when in sync."""
    out = subprocess.run([RSYNC, "--archive", "--delete", "--dry-run", "--itemize-changes", f"{src}/", f"{dest}/"],
                         capture_output=True, text=True, check=True).stdout
    return out.splitlines()


def test_the_real_run_walks_only_the_planned_paths(mirror: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13.4: the dry run walks the trees once; the transfer sends the planned list, not the whole tree again."""
    build, dest = mirror / "build/debian/amd64", mirror / "mirror/debian/amd64"
    for directory in ("pool/main/h", "pool/main/z/zsh", "dists/stable"):
        (build / directory).mkdir(parents=True)
    (build / "pool/main/h/hello.deb").write_text("hello")
    (build / "pool/main/z/zsh/zsh.deb").write_text("zsh")
    (build / "dists/stable/Release").write_text("Release")
    (build / "pkg3_amd64.deb").write_text("amd64 3, rebuilt")
    (build / "pkg4_amd64.deb").chmod(0o600)
    (dest / "old/deeper").mkdir(parents=True)
    (dest / "old/deeper/gone.deb").write_text("gone")
    for side in (build, dest):
        os.utime(side, (1_700_000_000, 1_700_000_000))
    commands = recorded_commands(monkeypatch)
    result = run_module(safe_sync, sync_args(mirror, max_delete_ratio=0.5))
    assert result.get("failed", False) is False, result.get("msg")
    assert sorted(result["transferred_files"]) == [
        "dists/stable/Release", "pkg20_amd64.deb", "pkg3_amd64.deb", "pool/main/h/hello.deb", "pool/main/z/zsh/zsh.deb"]
    assert sorted(result["deleted_files"]) == ["old/deeper/gone.deb", "pkg0_amd64.deb"]
    walks = [argv for argv in commands if not any(arg.startswith("--files-from=") for arg in argv)]
    assert len(walks) == 1 and "--dry-run" in walks[0]  # every real pass is a list of planned paths
    assert in_sync(build, dest) == []  # content, permissions and every directory's times, as plain rsync leaves them
    assert run_module(safe_sync, sync_args(mirror))["changed"] is False


def test_a_file_added_to_the_source_after_the_plan_waits_for_the_next_plan(mirror: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    build, dest = mirror / "build/debian/amd64", mirror / "mirror/debian/amd64"
    (build / "pool").mkdir()
    (build / "pool/planned.deb").write_text("planned")
    racing(monkeypatch, lambda: (build / "pool/late.deb").write_text("added after the plan"))
    result = run_module(safe_sync, sync_args(mirror))
    assert result.get("failed", False) is False, result.get("msg")
    assert sorted(result["transferred_files"]) == ["pkg20_amd64.deb", "pool/planned.deb"]
    assert not (dest / "pool/late.deb").exists()  # not on the plan: not sent by this run
    monkeypatch.undo()
    again = run_module(safe_sync, sync_args(mirror))
    assert again["transferred_files"] == ["pool/late.deb"]
    assert in_sync(build, dest) == []


def test_backup_dir_keeps_what_was_deleted_or_replaced(mirror: Path) -> None:
    (mirror / "build/debian/amd64/pkg5_amd64.deb").write_text("rebuilt 5")
    attic = mirror / "attic/debian/amd64"
    result = run_module(safe_sync, sync_args(mirror, backup_dir=str(attic)))
    assert result["changed"] is True
    assert tree(attic) == {"pkg0_amd64.deb": "amd64 0", "pkg5_amd64.deb": "amd64 5"}
    assert (mirror / "mirror/debian/amd64/pkg5_amd64.deb").read_text() == "rebuilt 5"
    assert run_module(safe_sync, sync_args(mirror, backup_dir=f"{mirror}/attic//amd64"))["refused"] is True


def test_delete_false_never_deletes(mirror: Path) -> None:
    result = run_module(safe_sync, sync_args(mirror, max_delete=0, delete=False))
    assert result["refused"] is False
    assert result["deleted"] == 0
    assert (mirror / "mirror/debian/amd64/pkg0_amd64.deb").exists()
    assert not any(a.startswith("--delete") for a in result["cmd"])


def test_exclude_keeps_excluded_files(mirror: Path) -> None:
    (mirror / "mirror/debian/amd64/.keep").write_text("local")
    result = run_module(safe_sync, sync_args(mirror, exclude=[".keep"]))
    assert result["deleted_files"] == ["pkg0_amd64.deb"]
    assert (mirror / "mirror/debian/amd64/.keep").exists()


def test_lists_are_bounded(mirror: Path) -> None:
    for i in range(30, 40):
        (mirror / f"build/debian/amd64/new{i}.deb").write_text("x")
    result = run_module(safe_sync, sync_args(mirror, list_limit=3), check_mode=True, diff=True)
    assert result["transferred"] == 11
    assert len(result["transferred_files"]) == 3
    assert result["lists_truncated"] is True
    assert result["diff"]["prepared"].rstrip().endswith("more changes")


def test_first_sync_into_an_empty_destination(mirror: Path) -> None:
    (mirror / "fresh/debian").mkdir(parents=True)
    result = run_module(safe_sync, sync_args(mirror, arch="arm64") | {"dest": f"{mirror}/fresh/debian/arm64"})
    assert result["changed"] is True
    assert result["plan"]["dest_files"] == 0
    assert result["transferred"] == FILES_PER_ARCH


def racing(monkeypatch: pytest.MonkeyPatch, change: Callable[[], None]) -> None:
    """Run ``change`` once, after the dry run and before the real run.

    The test's seam: the two phases run inside one module call, so nothing outside it can time a change between
    them; wrapping run_command (the module's only way to run rsync) times it exactly, with real rsync doing the rest.
    """
    real_run_command = AnsibleModule.run_command
    pending = [change]

    def racing_run_command(self: AnsibleModule, args: list[str], **kwargs: Any) -> tuple[int, str, str]:
        if "--dry-run" not in args and pending:
            pending.pop()()
        return real_run_command(self, args, **kwargs)

    monkeypatch.setattr(AnsibleModule, "run_command", racing_run_command)


def test_file_appearing_at_the_destination_after_the_plan_is_not_deleted(mirror: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    racing(monkeypatch, lambda: (mirror / "mirror/debian/amd64/late.deb").write_text("appeared after the plan"))
    result = run_module(safe_sync, sync_args(mirror))
    assert result.get("failed", False) is False, result.get("msg")
    assert result["deleted_files"] == ["pkg0_amd64.deb"]
    assert (mirror / "mirror/debian/amd64/late.deb").exists()


def vanish(mirror: Path, *names: str) -> None:
    for name in names:
        (mirror / "build/debian/amd64" / name).unlink()


def come_back_while_another_goes(mirror: Path) -> None:
    (mirror / "build/debian/amd64/pkg0_amd64.deb").write_text("amd64 0")
    vanish(mirror, "pkg5_amd64.deb")


SOURCE_CHANGES = [
    # (case, change made between the plan and the run, what the run deletes, planned but not deleted)
    ("two live packages vanish from the source", lambda m: vanish(m, "pkg5_amd64.deb", "pkg6_amd64.deb"),
     ["pkg0_amd64.deb"], []),
    ("the planned deletion comes back while another file goes", come_back_while_another_goes, [], ["pkg0_amd64.deb"]),
]


@pytest.mark.parametrize(("case", "change", "deleted", "kept"), SOURCE_CHANGES, ids=[c[0] for c in SOURCE_CHANGES])
def test_source_changed_after_the_plan_deletes_only_planned_files(mirror: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  case: str, change: Callable[[Path], None],
                                                                  deleted: list[str], kept: list[str]) -> None:
    """Issue 10.1: only files on the approved plan may be deleted, and the result names exactly those."""
    before = tree(mirror / "mirror/debian/amd64")
    racing(monkeypatch, lambda: change(mirror))
    result = run_module(safe_sync, sync_args(mirror))
    assert result.get("failed", False) is False, result.get("msg")
    assert result["plan"]["delete_count"] == 1
    assert result["deleted_files"] == deleted
    assert result.get("planned_not_deleted", []) == kept
    after = tree(mirror / "mirror/debian/amd64")
    assert sorted(set(before) - set(after)) == deleted  # what is gone is exactly what the result names
    assert "pkg5_amd64.deb" in after


def test_directory_deletion_keeps_what_appeared_inside_after_the_plan(mirror: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    old = mirror / "mirror/debian/amd64/old/deeper"
    old.mkdir(parents=True)
    (old / "a.deb").write_text("a")
    (old.parent / "b.deb").write_text("b")
    (mirror / "mirror/debian/amd64/gone/empty").mkdir(parents=True)
    racing(monkeypatch, lambda: (old / "late.deb").write_text("appeared after the plan"))
    result = run_module(safe_sync, sync_args(mirror, max_delete_ratio=0.5))
    assert result.get("failed", False) is False, result.get("msg")
    assert sorted(result["deleted_files"]) == ["old/b.deb", "old/deeper/a.deb", "pkg0_amd64.deb"]
    assert sorted(result["planned_not_deleted"]) == ["old/", "old/deeper/"]
    assert result["deleted_dirs"] == 2  # gone/ and gone/empty/: empty, deepest first
    assert not (mirror / "mirror/debian/amd64/gone").exists()
    assert (old / "late.deb").read_text() == "appeared after the plan"
    assert sorted(p.name for p in old.parent.rglob("*")) == ["deeper", "late.deb"]


def test_names_are_reported_decoded_and_synced_byte_for_byte(mirror: Path) -> None:
    """Issue 10.2 and 10.5: UTF-8 names read as text, other bytes as \\xNN, never rsync's \\#ooo escapes."""
    build, dest = mirror / "build/debian/amd64", mirror / "mirror/debian/amd64"
    (build / "paquet-ü.deb").write_text("new")
    (dest / "vieux-é.deb").write_text("old")
    os.close(os.open(os.fsencode(dest) + b"/latin1-\xe9.deb", os.O_CREAT | os.O_WRONLY, 0o644))
    plan = run_module(safe_sync, sync_args(mirror, max_delete_ratio=0.5), check_mode=True, diff=True)
    assert sorted(plan["transferred_files"]) == ["paquet-ü.deb", "pkg20_amd64.deb"]
    assert sorted(plan["deleted_files"]) == ["latin1-\\xe9.deb", "pkg0_amd64.deb", "vieux-é.deb"]
    assert ">f+++++++++ paquet-ü.deb" in plan["diff"]["prepared"]
    assert "\\#" not in plan["diff"]["prepared"]
    result = run_module(safe_sync, sync_args(mirror, max_delete_ratio=0.5))
    assert sorted(result["deleted_files"]) == sorted(plan["deleted_files"])
    assert sorted(os.listdir(os.fsencode(dest))) == sorted(os.listdir(os.fsencode(build)))


@pytest.mark.parametrize("spec", ["-n:{root}/mirror/debian/amd64", "--list-only:{root}/mirror/debian/amd64",
                                  "-oProxyCommand=id:{root}/mirror/debian/amd64",
                                  "mirror 1:{root}/mirror/debian/amd64"])
@pytest.mark.parametrize("side", ["src", "dest"])
def test_a_location_rsync_could_read_as_an_option_is_refused(mirror: Path, spec: str, side: str) -> None:
    """Issue 10.3: a location starting with '-' (or a host that is no host name) never reaches rsync."""
    before = tree(mirror / "mirror")
    result = run_module(safe_sync, sync_args(mirror) | {side: spec.format(root=mirror)})
    assert result["refused"] is True and result["failed"] is True
    assert "rsync" not in " ".join(result.get("cmd", []))
    assert f"{side} '" in result["msg"]
    assert tree(mirror / "mirror") == before


def test_remote_shell_destination(mirror: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """host:path over --rsh: a remote shell that runs the server side locally, like `docker exec -i` does."""
    shell = tmp_path_factory.mktemp("bin") / "localsh"
    shell.write_text('#!/bin/sh\nshift\nexec "$@"\n')
    shell.chmod(shell.stat().st_mode | stat.S_IXUSR)
    args = sync_args(mirror) | {"dest": f"lab-host:{mirror}/mirror/debian/amd64", "rsh": str(shell)}
    refused = run_module(safe_sync, args | {"dest": f"lab-host:{mirror}/mirror/debian/"})
    assert "dest path on lab-host '" in refused["msg"] and "last component (after 'debian') is empty" in refused["msg"]
    result = run_module(safe_sync, args)
    assert result["changed"] is True
    assert f"--rsh={shell}" in result["cmd"]
    assert tree(mirror / "mirror/debian/amd64") == tree(mirror / "build/debian/amd64")


@pytest.fixture
def rsync_daemon(mirror: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real rsync daemon on 127.0.0.1 serving the mirror's repository as the module 'debian'."""
    conf_dir = tmp_path_factory.mktemp("rsyncd")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (conf_dir / "rsyncd.conf").write_text(
        f"pid file = {conf_dir}/rsyncd.pid\nuse chroot = no\nuid = root\ngid = root\n"
        f"[debian]\npath = {mirror}/mirror/debian\nread only = no\n")
    daemon = subprocess.Popen([RSYNC, "--daemon", "--no-detach", "--address=127.0.0.1", f"--port={port}",
                               f"--config={conf_dir}/rsyncd.conf"])
    try:
        for _attempt in range(50):
            with socket.socket() as client:
                if client.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        yield f"rsync://127.0.0.1:{port}/debian"
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)


def test_sigterm_during_the_real_pass_stops_rsync(mirror: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A terminated module (a task timeout, a stopped receiver run) takes its rsync with it: before, rsync went on
    transferring and deleting after the run had been recorded as failed."""
    bin_dir = tmp_path_factory.mktemp("bin")
    shell, hanging = bin_dir / "slowsh", bin_dir / "real-pass-started"
    # The dry run goes through at once; the real pass (the second call) hangs in its remote shell, in a process whose
    # command line names the shell (so that the test can end it).
    shell.write_text(f'#!/bin/sh\nif [ -e {bin_dir}/planned ]; then touch {hanging}\n'
                     f'exec {sys.executable} -c "import time; time.sleep(60)" {shell}; fi\n'
                     f'touch {bin_dir}/planned\nshift\nexec "$@"\n')
    shell.chmod(shell.stat().st_mode | stat.S_IXUSR)
    before = tree(mirror / "mirror/debian/amd64")
    args = sync_args(mirror) | {"dest": f"lab-host:{mirror}/mirror/debian/amd64", "rsh": str(shell),
                                "metrics_file": str(mirror / "sync.prom")}
    process = start_module("safe_sync", args)
    try:
        assert wait_for_file(hanging, process), "the real pass never started"
        process.send_signal(signal.SIGTERM)
        result = finish_module(process)
        assert result["failed"] and "terminated by SIGTERM" in result["msg"], result
        # What the run did, not what it planned (the result and the metrics said 1 transferred and 1 deleted).
        assert (result["transferred"], result["deleted"], result["pass_in_progress"]) == (0, 0, "transfer"), result
        assert result["plan"]["delete_count"] == 1 and result["changed"] is True
        metrics = (mirror / "sync.prom").read_text()
        assert re.search(r"^pmr_guard_deleted\{[^}]*\} 0$", metrics, re.M), metrics
        assert re.search(r"^pmr_guard_failed\{[^}]*\} 1$", metrics, re.M), metrics
        deadline = time.monotonic() + 10
        while processes_naming(f"--rsh={shell}") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert processes_naming(f"--rsh={shell}") == [], "rsync outlived its module"
        assert tree(mirror / "mirror/debian/amd64") == before
    finally:
        process.kill()
        kill_processes_naming(str(shell))


def test_rsync_daemon_destination(mirror: Path, rsync_daemon: str) -> None:
    refused = run_module(safe_sync, sync_args(mirror) | {"dest": f"{rsync_daemon}/"})
    assert refused["refused"] is True
    assert "dest path on 127.0.0.1:" in refused["msg"] and "'debian/': the last component" in refused["msg"]
    before_i386 = tree(mirror / "mirror/debian/i386")
    result = run_module(safe_sync, sync_args(mirror, timeout=10) | {"dest": f"{rsync_daemon}/amd64"})
    assert result["changed"] is True, result.get("msg")
    assert "--contimeout=10" in result["cmd"]
    assert (result["transferred"], result["deleted"]) == (1, 1)
    assert tree(mirror / "mirror/debian/amd64") == tree(mirror / "build/debian/amd64")
    assert tree(mirror / "mirror/debian/i386") == before_i386


@pytest.mark.parametrize(("spec", "kind", "host", "path"), [
    ("/srv/mirror/debian", "local", None, "/srv/mirror/debian"),
    ("dir:with/colon", "shell", "dir", "with/colon"),
    ("./a:b", "local", None, "./a:b"),
    ("mirror1:/srv/mirror", "shell", "mirror1", "/srv/mirror"),
    ("user@mirror1:/srv/mirror", "shell", "user@mirror1", "/srv/mirror"),
    ("mirror1::debian/amd64", "daemon", "mirror1", "debian/amd64"),
    ("rsync://127.0.0.1:8730/debian/amd64", "daemon", "127.0.0.1:8730", "debian/amd64"),
])
def test_location_forms(spec: str, kind: str, host: str | None, path: str) -> None:
    location = safe_sync.Location("dest", spec)
    assert (location.kind, location.host, location.path) == (kind, host, path)


def test_both_sides_remote_is_refused(mirror: Path) -> None:
    result = run_module(safe_sync, sync_args(mirror) | {"src": "a:/x/debian/amd64", "dest": "b:/y/debian/amd64"})
    assert result["refused"] is True
    assert "both remote" in result["msg"]


@pytest.mark.parametrize(("option", "value"), [("max_delete", -1), ("max_delete_ratio", 1.5)])
def test_meaningless_bounds_fail(mirror: Path, option: str, value: float) -> None:
    result = run_module(safe_sync, sync_args(mirror) | {option: value})
    assert result["failed"] is True
    assert option in result["msg"]
    assert os.path.exists(mirror / "mirror/debian/amd64/pkg0_amd64.deb")
