"""Names on the shared machine: every lab host, container, loop filesystem and port that `make test`, `make demo` and
`make bench` create carries this checkout's LAB_PREFIX (tests/lab/prefix.sh) or a name the kernel or a random tag
picked, so two checkouts on one Docker engine never remove or reuse each other's. The scan below looks in
extensions/molecule, tests, demo and bench for a fixed name or port that bypasses the prefix."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import jinja2
import yaml

REPO = Path(__file__).resolve().parents[3]
THIS = Path(__file__).resolve()
PREFIX_SH = REPO / "tests" / "lab" / "prefix.sh"
MOLECULE = REPO / "extensions" / "molecule"
PY_ROOTS = [REPO / "tests", REPO / "demo", REPO / "bench"]
SHELL_FILES = [REPO / "Makefile", *sorted((REPO / "tests" / "lab").glob("*.sh"))]
# A bare name such as pmr-i5 or pmr-fleet-bench (not an image pmr-lab:latest, not a path, not a unit file name).
FIXED_NAME = re.compile(r"^pmr-[a-z0-9][a-z0-9_-]*[a-z0-9]$")
# Assignments, arguments and defaults that name something created on the shared machine.
NAMING = re.compile(r"(prefix|host|name|state|container|volume)", re.IGNORECASE)
NOT_NAMING = re.compile(r"(service|unit)", re.IGNORECASE)  # a systemd unit inside a lab host or a fake one
# tempfile and PgServer add a random part to their prefix: those names are unique already.
RANDOM_SUFFIX_CALLS = {"mkdtemp", "mkstemp", "TemporaryDirectory", "NamedTemporaryFile", "PgServer"}
ENV_LOOKUPS = {"get", "getenv", "setdefault"}


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _python_files() -> list[Path]:
    return sorted(p for root in PY_ROOTS for p in root.rglob("*.py") if ".venv" not in p.parts)


def _fixed_names(node: ast.AST) -> Iterator[ast.Constant]:
    """Literal pmr-<name> strings in `node`, outside f-strings (f"pmr-x-{uuid}" has a part of its own)."""
    if isinstance(node, ast.JoinedStr):
        return
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and FIXED_NAME.match(node.value):
        yield node
        return
    if isinstance(node, ast.Call) and _call_name(node) in RANDOM_SUFFIX_CALLS:
        node = ast.Call(func=node.func, args=node.args, keywords=[k for k in node.keywords if k.arg != "prefix"])
    for child in ast.iter_child_nodes(node):
        yield from _fixed_names(child)


def _call_name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _target_names(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        return [node.attr]
    if isinstance(node, ast.Tuple | ast.List):
        return [n for elt in node.elts for n in _target_names(elt)]
    return []


def python_violations(path: Path) -> list[str]:
    """FILE:LINE: what, for each fixed name given to something that names a host, a prefix, a container..."""
    tree = ast.parse(path.read_text(), str(path))
    found: dict[int, str] = {}

    def flag(value: ast.AST | None, why: str) -> None:
        for const in _fixed_names(value) if value is not None else ():
            found.setdefault(const.lineno, f"{_rel(path)}:{const.lineno}: {const.value!r} {why}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [n for t in targets for n in _target_names(t)]
            if any(NAMING.search(n) and not NOT_NAMING.search(n) for n in names):
                flag(node.value, f"assigned to {', '.join(names)}")
        elif isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg and (NAMING.search(keyword.arg) or keyword.arg == "default") \
                        and not NOT_NAMING.search(keyword.arg) \
                        and not (keyword.arg == "prefix" and _call_name(node) in RANDOM_SUFFIX_CALLS):
                    flag(keyword.value, f"given as {keyword.arg}=")
            if _call_name(node) in ENV_LOOKUPS and len(node.args) == 2:
                flag(node.args[1], "as the default of an environment variable")
            if _call_name(node) == "add_argument":
                for arg, keyword in ((a, k) for a in node.args for k in node.keywords if k.arg == "default"):
                    if isinstance(arg, ast.Constant) and "prefix" in str(arg.value):
                        flag(keyword.value, f"as the default of {arg.value}")
        elif isinstance(node, ast.List | ast.Tuple):
            words = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
            if "--name" in words or any(w.endswith(("lab.sh", "loopfs.sh")) for w in words):
                flag(node, "passed to docker --name, lab.sh or loopfs.sh")
        elif isinstance(node, ast.arguments):
            for default in [*node.defaults, *node.kw_defaults]:
                flag(default, "as a parameter's default")
    return sorted(found.values())


# Host ports fixed in code that runs on the machine itself: servers bound, ports published. Ports inside a lab host
# (its own network namespace, reached through docker exec) are the lab host's business and are not scanned.
FIXED_PORT = [
    re.compile(r"\(\s*[\"']127\.0\.0\.1[\"']\s*,\s*[1-9][0-9]*\s*\)"),  # bind(("127.0.0.1", 9093))
    re.compile(r"listen-address[= ][\"']?127\.0\.0\.1:[1-9][0-9]*"),  # --web.listen-address=127.0.0.1:9090
    re.compile(r"(-p|--publish)[ =][\"']?(127\.0\.0\.1:)?[1-9][0-9]*:[0-9]"),  # docker run -p 9100:9100
    re.compile(r"published_ports:.*[\"' ](127\.0\.0\.1:)?[1-9][0-9]*:[0-9]"),
]


def port_violations(path: Path) -> list[str]:
    out = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if any(p.search(line) for p in FIXED_PORT):
            out.append(f"{_rel(path)}:{number}: a fixed host port: {line.strip()}")
    return out


def shell_violations(path: Path) -> list[str]:
    """A fixed default prefix in the Makefile or a lab script (${LAB_PREFIX:-pmr-lab}, LAB_PREFIX ?= pmr-lab)."""
    pattern = re.compile(r"(:-|\?=\s*|:=\s*)pmr-[a-z0-9_-]*(?![a-z0-9_:.-])")
    return [f"{_rel(path)}:{n}: a fixed default prefix: {line.strip()}"
            for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]


def test_no_fixed_names_or_ports_in_tests_demo_bench_and_lab_scripts() -> None:
    problems = [v for p in _python_files() for v in python_violations(p) + (port_violations(p) if p != THIS else [])]
    problems += [v for p in SHELL_FILES for v in shell_violations(p) + port_violations(p)]
    problems += [v for p in sorted(MOLECULE.rglob("*.yml")) for v in port_violations(p)]
    assert problems == [], "names or ports that bypass LAB_PREFIX (tests/lab/prefix.sh):\n" + "\n".join(problems)


def test_the_scan_finds_what_it_is_for(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        'import os, tempfile\n'
        'PREFIX = "pmr-fixed"\n'
        'LAB = os.environ.get("RECEIVER_LAB_PREFIX", "pmr-i5")\n'
        'run(["bash", "tests/lab/lab.sh", "up", "1", "pmr-other"])\n'
        'parser.add_argument("--prefix", default="pmr-fleet-bench")\n'
        'settings = replace(s, prefix="pmr-demo-e2e")\n'
        'srv = Server(("127.0.0.1", 9093))\n'
        'ok = tempfile.mkdtemp(prefix="pmr-random-")\n'
        'fine = f"pmr-x-{uuid}"\n'
        'image = "pmr-workload:latest"\n'
        'labels = {"pmr-demo-1": 1}\n'
        'kernel = Server(("127.0.0.1", 0))\n')
    names = [v.split(": ", 1)[1].split()[0] for v in python_violations(sample)]
    assert names == ["'pmr-fixed'", "'pmr-i5'", "'pmr-other'", "'pmr-fleet-bench'", "'pmr-demo-e2e'"]
    ports = port_violations(sample)
    assert len(ports) == 1 and "9093" in ports[0], ports
    shell = tmp_path / "Makefile"
    shell.write_text("LAB_PREFIX ?= pmr-lab\nfoo:\n\tbash lab.sh down ${LAB_PREFIX:-pmr-demo}\nLAB_PREFIX ?= $(x)\n")
    assert [v.split(":")[1] for v in shell_violations(shell)] == ["1", "3"]


# Molecule: a platform's name is its inventory host name (the same in every checkout); the container behind it is
# pmr_lab_container, LAB_PREFIX and the platform name (extensions/molecule/config.yml).
def _platforms() -> list[str]:
    return [p["name"] for f in sorted(MOLECULE.glob("*/molecule.yml"))
            for p in yaml.safe_load(f.read_text())["platforms"]]


def _container_name(prefix: str, host: str) -> str:
    config = yaml.safe_load((MOLECULE / "config.yml").read_text())
    group_vars = config["provisioner"]["inventory"]["group_vars"]["all"]
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env.filters["regex_replace"] = lambda value, pattern, repl="": re.sub(pattern, repl, value)
    env.filters["quote"] = lambda value: value

    def lookup(plugin: str, *terms: str) -> str:
        assert plugin == "ansible.builtin.env" and terms == ("LAB_PREFIX",), (plugin, terms)
        return prefix

    values = {"inventory_hostname": host, "lookup": lookup}
    values["pmr_lab_prefix"] = env.from_string(group_vars["pmr_lab_prefix"]).render(values)
    container = env.from_string(group_vars["pmr_lab_container"]).render(values)
    assert env.from_string(group_vars["ansible_host"]).render({**values, "pmr_lab_container": container}) == container
    return container


def test_molecule_containers_carry_the_checkout_prefix() -> None:
    hosts = _platforms()
    for prefix, other in (("pmr-aaaaaa", "pmr-bbbbbb"), ("pmr-me", "pmr-you")):
        names = [_container_name(prefix, host) for host in hosts]
        assert len(set(names)) == len(names), names
        assert all(n.startswith(prefix + "-") for n in names), names
        assert not set(names) & {_container_name(other, host) for host in hosts}
        # `make lab-down` (lab.sh down LAB_PREFIX: exactly LAB_PREFIX-<number>) never removes a Molecule host.
        assert not [n for n in names if re.fullmatch(re.escape(prefix) + r"-[0-9]+", n)], names
    assert _container_name("pmr-aaaaaa", "pmr-signals-1") == "pmr-aaaaaa-signals-1"


def _tasks(node: object) -> Iterator[dict]:
    if isinstance(node, list):
        for item in node:
            yield from _tasks(item)
    elif isinstance(node, dict):
        yield node
        for key in ("tasks", "pre_tasks", "post_tasks", "handlers", "block", "rescue", "always"):
            yield from _tasks(node.get(key))


def test_molecule_creates_and_removes_containers_and_loop_files_by_their_prefixed_name() -> None:
    problems, seen = [], 0
    for path in sorted(MOLECULE.rglob("*.yml")):
        for task in _tasks(yaml.safe_load(path.read_text())):
            for module in ("community.docker.docker_container", "docker_container"):
                if module in task:
                    seen += 1
                    name = str(task[module].get("name"))
                    via = str(task.get("vars", {}).get(name.strip("{} ")) or "")
                    if "pmr_lab_container" not in name + via:
                        problems.append(f"{_rel(path)}: {task.get('name')}: container name {name}")
            argv = task.get("ansible.builtin.command", {})
            argv = argv.get("argv", []) if isinstance(argv, dict) else []
            if any("loopfs" in str(a) for a in argv) and "pmr_lab_container" not in " ".join(map(str, argv)):
                problems.append(f"{_rel(path)}: {task.get('name')}: loop filesystem named {argv[3:4]}")
    assert seen >= 2 and problems == [], problems


def test_molecule_playbooks_never_use_a_platform_name_as_a_container_name() -> None:
    hosts = "|".join(re.escape(h) for h in _platforms())
    outside = re.compile(rf"(exec(\s+-\w+)*\s+|--name[= ]|/loop/|dest_host:\s*[\"']?|[\"' ])({hosts})(:/|\b)")
    problems = []
    for path in sorted(MOLECULE.rglob("*.yml")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = outside.search(line)
            if match and (match.group(1).strip(" \"'") or match.group(4) == ":/"):
                problems.append(f"{_rel(path)}:{number}: {line.strip()}")
    assert problems == [], "a platform name where the container (hostvars[...].pmr_lab_container) is meant:\n" + \
        "\n".join(problems)


def test_prefix_per_checkout_given_or_refused(tmp_path: Path) -> None:
    prefixes = []
    for clone in ("a", "b"):
        script = tmp_path / clone / "tests" / "lab" / "prefix.sh"
        script.parent.mkdir(parents=True)
        script.write_text(PREFIX_SH.read_text())
        run = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=True,
                             env={"PATH": "/usr/bin:/bin"})
        prefixes.append(run.stdout.strip())
    assert prefixes[0] != prefixes[1] and all(re.fullmatch(r"pmr-[0-9a-f]{6}", p) for p in prefixes), prefixes
    given = subprocess.run(["bash", str(PREFIX_SH)], capture_output=True, text=True, check=True,
                           env={"PATH": "/usr/bin:/bin", "LAB_PREFIX": "pmr-me"})
    assert given.stdout == "pmr-me\n"
    for bad in ("pmr me", "-x", "a/b", "x.y"):
        refused = subprocess.run(["bash", str(PREFIX_SH)], capture_output=True, text=True, check=False,
                                 env={"PATH": "/usr/bin:/bin", "LAB_PREFIX": bad})
        assert refused.returncode == 2 and bad in refused.stderr, (bad, refused)


def test_make_python_and_the_demo_agree_on_the_prefix() -> None:
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    make = subprocess.run(["make", "-s", "--no-print-directory", "lab-prefix"], cwd=REPO, capture_output=True,
                          text=True, check=True, env=env).stdout.strip()
    script = subprocess.run(["bash", str(PREFIX_SH)], capture_output=True, text=True, check=True,
                            env=env).stdout.strip()
    assert make == script and make.startswith("pmr-")
    given = subprocess.run(["make", "-s", "--no-print-directory", "lab-prefix", "LAB_PREFIX=pmr-given"], cwd=REPO,
                           capture_output=True, text=True, check=True, env=env).stdout.strip()
    assert given == "pmr-given"
    sys.path.insert(0, str(REPO))
    from demo.settings import Settings

    assert Settings.from_env({}).prefix == f"{make}-demo"
    assert Settings.from_env({"LAB_PREFIX": "pmr-given"}).prefix == "pmr-given-demo"
