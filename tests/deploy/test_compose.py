"""The Docker files are valid Compose and agree with the code they run, checked offline.

Validity: `docker-compose.yml`, `docker-compose.dev.yml` and the dev file merged over the base
pass the Compose Specification's JSON schema (vendored in `schemas/compose-spec.json`); when a
`docker-compose` or `docker compose` binary is installed, it must accept them too. Agreement:
commands and the image's entry point run modules that exist, health checks probe the ports and
paths the services serve (`Settings`, `create_app`, `health_routes`), every variable set is a
setting, required settings reach every service, the consumers can scale, and `.env.example`
lists every setting. The Dockerfile is read as text and its entry point is run with a stand-in
`python`. Nothing is built or started, so the image's real contents are not covered here.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

import shared
from shared import db
from shared.config import Settings
from shared.health import Health, health_routes

from api.app import create_app

ROOT = Path(__file__).resolve().parents[2]
# The Compose Specification's schema (compose-spec/compose-spec, Apache-2.0) as shipped by
# check-jsonschema 0.39.0 (check_jsonschema/builtin_schemas/vendor/compose-spec.json), unchanged:
# sha256 d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64.
SCHEMA = Path(__file__).with_name("schemas") / "compose-spec.json"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
BASE = "docker-compose.yml"
DEV = "docker-compose.dev.yml"

# Compose service -> (module it runs, the setting holding its HTTP port, its health prefix).
# The consumers' prefix is the one `shared.consumer.Consumer._start_health_server` mounts.
APP_SERVICES = {
    "backend": ("api", "PORT", "/api/health"),
    "notifier": ("notifier", "NOTIFIER_HEALTH_PORT", "/health"),
    "webhook-dispatcher": ("webhook_dispatcher", "WEBHOOK_DISPATCHER_HEALTH_PORT", "/health"),
    "audit": ("audit", "AUDIT_HEALTH_PORT", "/health"),
}
CONSUMERS = ("notifier", "webhook-dispatcher", "audit")
INFRA = {"postgres": "POSTGRES_", "redis": None, "rabbitmq": "RABBITMQ_DEFAULT_"}
MIGRATE_MODULE = "shared.migrate"
# The entry point's names, as documented in deploy/Dockerfile and docs/docker.md.
ENTRYPOINT_NAMES = {
    "api": "api",
    "notifier": "notifier",
    "webhook-dispatcher": "webhook_dispatcher",
    "audit": "audit",
    "migrate": "shared.migrate",
}
VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / name).read_text())


def merge(base: Any, override: Any, key: str = "") -> Any:
    """Compose's merge of an override file, as far as these files use it."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for k, v in override.items():
            merged[k] = merge(base[k], v, k) if k in base else copy.deepcopy(v)
        return merged
    if key in ("ports", "volumes") and isinstance(base, list) and isinstance(override, list):
        return base + [item for item in override if item not in base]
    return copy.deepcopy(override)


def configs() -> dict[str, dict[str, Any]]:
    base, dev = load(BASE), load(DEV)
    return {BASE: base, DEV: dev, f"{BASE} + {DEV}": merge(base, dev)}


def full_configs() -> dict[str, dict[str, Any]]:
    """The configurations that start the whole system (the dev file alone is only an override)."""
    return {name: cfg for name, cfg in configs().items() if name != DEV}


def defaults(value: str) -> str:
    """Compose interpolation with every variable unset: `${X:-d}` is d, `${X:?m}` is a stand-in."""
    return VARIABLE.sub(lambda m: m["arg"] if m["op"] in (":-", "-") else f"<{m['name']}>", value)


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def env_files(service: dict[str, Any]) -> list[str]:
    files = service.get("env_file") or []
    files = [files] if isinstance(files, str) else files
    return [f if isinstance(f, str) else f["path"] for f in files]


def command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd)


def python_module(argv: list[str]) -> str | None:
    """The module `python -m X` runs in argv, or in a command string inside it (watchfiles)."""
    if "-m" in argv and argv[0].startswith("python"):
        return argv[argv.index("-m") + 1]
    for arg in argv:
        if " " in arg and (inner := python_module(shlex.split(arg))):
            return inner
    return None


def runnable(module: str) -> bool:
    """`python -m module` works: the module exists, or it is a package with a `__main__`."""
    spec = importlib.util.find_spec(module)
    if spec is None:
        return False
    return (
        not spec.submodule_search_locations
        or importlib.util.find_spec(f"{module}.__main__") is not None
    )


def setting_default(name: str) -> Any:
    return Settings.model_fields[name].get_default(call_default_factory=True)


@functools.cache
def api_get_paths() -> frozenset[str]:
    secret = "s" * 64
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        JWT_ACCESS_SECRET=secret,
        JWT_REFRESH_SECRET=secret,
        DEVICE_TOKEN_SECRET=secret,
        ENCRYPTION_KEY=secret,
    )
    app = create_app(settings)
    return frozenset(
        r.resource.canonical for r in app.router.routes() if r.method == "GET" and r.resource
    )


def probed_url(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    text = test if isinstance(test, str) else " ".join(test)
    urls = re.findall(r"https?://[^\s'\"]+", text)
    assert len(urls) == 1, f"expected one URL in the health check: {text}"
    return urls[0]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments left out."""
    lines = [
        line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")
    ]
    logical = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in logical.splitlines():
        if line.strip():
            op, _, args = line.strip().partition(" ")
            out.append((op.upper(), args.strip()))
    return out


def dockerfile_stages() -> list[dict[str, Any]]:
    stages: list[dict[str, Any]] = []
    for op, args in dockerfile_instructions():
        if op == "FROM":
            words = args.split()
            name = words[words.index("AS") + 1] if "AS" in words else str(len(stages))
            stages.append({"name": name, "base": words[0], "instructions": []})
        elif stages:
            stages[-1]["instructions"].append((op, args))
    return stages


def stage_chain(name: str) -> list[dict[str, Any]]:
    """The stage and those it is built FROM, oldest first."""
    by_name = {s["name"]: s for s in dockerfile_stages()}
    chain = [by_name[name]]
    while chain[0]["base"] in by_name:
        chain.insert(0, by_name[chain[0]["base"]])
    return chain


def final_instructions() -> list[tuple[str, str]]:
    final = dockerfile_stages()[-1]["name"]
    return [i for stage in stage_chain(final) for i in stage["instructions"]]


def write_entrypoint(directory: Path) -> Path:
    """Run the Dockerfile's RUN that writes the entry point, writing it into `directory` instead."""
    runs = [
        args
        for op, args in final_instructions()
        if op == "RUN" and "/usr/local/bin/tfa-entrypoint" in args
    ]
    assert len(runs) == 1, "one RUN writes /usr/local/bin/tfa-entrypoint"
    target = directory / "tfa-entrypoint"
    subprocess.run(
        ["sh", "-ec", runs[0].replace("/usr/local/bin/tfa-entrypoint", str(target))], check=True
    )
    return target


def env_example() -> dict[str, str | None]:
    """`NAME=value` lines of .env.example, and `# NAME=` lines (documented, unset by default)."""
    listed: dict[str, str | None] = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if m := re.fullmatch(r"\s*(#\s*)?([A-Z][A-Z0-9_]*)=(.*)", line):
            listed[m[2]] = None if m[1] else m[3]
    return listed


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


@pytest.mark.parametrize("name", list(configs()))
def test_compose_files_follow_the_compose_specification(name: str, validator: Any) -> None:
    errors = sorted(validator.iter_errors(configs()[name]), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
    )


@pytest.mark.parametrize("name", list(full_configs()))
def test_every_application_service_runs_an_importable_module(name: str) -> None:
    services = full_configs()[name]["services"]
    expected = {svc: module for svc, (module, _, _) in APP_SERVICES.items()} | {
        "migrate": MIGRATE_MODULE
    }
    for svc, module in expected.items():
        assert python_module(command(services[svc])) == module, f"{svc}: {command(services[svc])}"
        assert runnable(module), f"{svc}: `python -m {module}` has nothing to run"


def test_dev_commands_use_the_tool_the_dev_image_installs() -> None:
    dev_stage = next(s for s in dockerfile_stages() if s["name"] == "dev")
    installs = " ".join(args for op, args in dev_stage["instructions"] if op == "RUN")
    for svc, service in load(DEV)["services"].items():
        argv = command(service)
        if argv and not argv[0].startswith("python"):
            assert re.search(rf"\b{re.escape(argv[0])}==", installs), (
                f"{svc}: {argv[0]} is not installed in the dev stage"
            )
        assert service.get("build", {}).get("target") == "dev", (
            f"{svc} does not build the dev target"
        )


def test_entrypoint_maps_each_service_name_to_its_module(tmp_path: Path) -> None:
    """The image's entry point, run with a stand-in `python`, starts the module each name means."""
    entrypoint = write_entrypoint(tmp_path)
    assert entrypoint.stat().st_mode & stat.S_IXUSR
    stub = tmp_path / "bin" / "python"
    stub.parent.mkdir()
    stub.write_text('#!/bin/sh\necho "$@"\n')
    stub.chmod(0o755)
    env = {"PATH": f"{stub.parent}:/usr/bin:/bin"}
    for name, module in ENTRYPOINT_NAMES.items():
        out = subprocess.run(
            [str(entrypoint), name, "--flag"], env=env, capture_output=True, text=True, check=True
        )
        assert out.stdout.split() == ["-m", module, "--flag"], (name, out.stdout, out.stderr)
        assert runnable(module), f"`python -m {module}` has nothing to run"
    out = subprocess.run(
        [str(entrypoint), "echo", "as", "given"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout == "as given\n"


def test_image_healthcheck_probes_each_service_where_it_listens(tmp_path: Path) -> None:
    script = write_entrypoint(tmp_path).read_text()
    probes = re.findall(
        r'\*" -m (\S+) "\*\) url="http://127\.0\.0\.1:\$\{(\w+):-(\d+)\}(/\S+)"', script
    )
    api_paths = api_get_paths()
    consumer_paths = {"/health" + suffix for suffix, _ in health_routes(Health(component="test"))}
    expected = {module: (port, prefix) for module, port, prefix in APP_SERVICES.values()}
    assert {module for module, *_ in probes} == set(expected)
    for module, variable, default, path in probes:
        assert variable == expected[module][0]
        assert int(default) == setting_default(variable), (
            f"{module}: {variable} defaults to {setting_default(variable)}"
        )
        assert path in (api_paths if module == "api" else consumer_paths), (
            f"{module} serves no GET {path}"
        )
    assert any(
        op == "HEALTHCHECK" and "tfa-entrypoint" in args for op, args in final_instructions()
    )


@pytest.mark.parametrize("name", list(full_configs()))
def test_healthchecks_probe_each_service_port_and_health_path(name: str) -> None:
    services = full_configs()[name]["services"]
    api_paths = api_get_paths()
    consumer_paths = {"/health" + suffix for suffix, _ in health_routes(Health(component="test"))}
    for svc, (module, port_setting, prefix) in APP_SERVICES.items():
        service = services[svc]
        url = urlsplit(probed_url(service))
        listens_on = int(environment(service).get(port_setting) or setting_default(port_setting))
        assert url.hostname in ("127.0.0.1", "localhost"), svc
        assert url.port == listens_on, f"{svc} probes port {url.port}, listens on {listens_on}"
        paths = api_paths if module == "api" else consumer_paths
        assert url.path.startswith(prefix) and url.path in paths, f"{svc} serves no GET {url.path}"
    for svc in INFRA:
        assert services[svc]["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), svc
    assert services["migrate"]["healthcheck"] == {"disable": True}, "migrate exits: no health check"


@pytest.mark.parametrize("name", list(configs()))
def test_compose_sets_only_settings_and_the_infrastructure_images_variables(name: str) -> None:
    fields = set(Settings.model_fields)
    for svc, service in configs()[name]["services"].items():
        names = set(environment(service))
        if svc in INFRA:
            prefix = INFRA[svc]
            assert all(prefix and n.startswith(prefix) for n in names), f"{svc}: {sorted(names)}"
        else:
            assert names <= fields, f"{svc} sets what no setting reads: {sorted(names - fields)}"


def test_every_variable_the_compose_files_interpolate_is_in_env_example() -> None:
    used = {m["name"] for name in (BASE, DEV) for m in VARIABLE.finditer((ROOT / name).read_text())}
    missing = used - set(env_example())
    assert not missing, f"add to .env.example: {sorted(missing)}"


@pytest.mark.parametrize("name", list(full_configs()))
def test_required_settings_reach_every_application_service(name: str) -> None:
    required = {n for n, f in Settings.model_fields.items() if f.is_required()}
    assert required, "Settings has required fields (the secrets)"
    services = full_configs()[name]["services"]
    for svc in [*APP_SERVICES, "migrate"]:
        service = services[svc]
        provided = set(environment(service))
        if ".env" not in env_files(service):
            assert required <= provided, f"{svc} lacks {sorted(required - provided)}"
    for svc in INFRA:
        assert "env_file" not in services[svc], f"{svc} would receive the services' secrets"
    assert required <= {n for n, v in env_example().items() if v is not None}


@pytest.mark.parametrize("name", list(full_configs()))
def test_backend_publishes_the_api_port(name: str) -> None:
    backend = full_configs()[name]["services"]["backend"]
    published = []
    for port in backend.get("ports", []):
        if isinstance(port, dict):
            published.append((str(port.get("published")), str(port["target"])))
        else:
            *host, target = defaults(str(port)).split(":")
            published.append((host[-1] if host else "", target.split("/")[0]))
    container_port = str(int(environment(backend).get("PORT") or setting_default("PORT")))
    assert container_port == "3001"
    assert ("3001", container_port) in published, published


@pytest.mark.parametrize("name", list(full_configs()))
def test_consumers_publish_no_fixed_host_port_so_they_scale(name: str) -> None:
    services = full_configs()[name]["services"]
    for svc in CONSUMERS:
        assert not services[svc].get("ports"), (
            f"{svc} publishes a port: --scale {svc}=3 would clash"
        )
    for svc in [*CONSUMERS, "backend", "migrate"]:
        assert "container_name" not in services[svc], f"{svc} has a fixed container name"


@pytest.mark.parametrize("name", list(full_configs()))
def test_services_wait_for_healthy_infrastructure_and_finished_migrations(name: str) -> None:
    services = full_configs()[name]["services"]
    healthy = {svc: "service_healthy" for svc in INFRA}
    for svc in APP_SERVICES:
        depends = {k: v["condition"] for k, v in services[svc]["depends_on"].items()}
        assert depends == healthy | {"migrate": "service_completed_successfully"}, svc
    assert {k: v["condition"] for k, v in services["migrate"]["depends_on"].items()} == {
        "postgres": "service_healthy"
    }
    assert services["migrate"]["restart"] == "no"


def test_dockerfile_builds_in_stages_and_runs_as_non_root() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    builder = next(s for s in stages if s["name"] == "builder")
    builds = " ".join(args for op, args in builder["instructions"] if op == "RUN")
    assert re.search(r"pip install -c \S*constraints\.txt \S*(\.|/src)\b", builds), (
        "builder installs the project"
    )
    final = final_instructions()
    users = [args for op, args in final if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), (
        f"the image runs as {users[-1:] or 'root'}"
    )
    assert re.fullmatch(r"\d+(:\d+)?", users[-1]), "a numeric USER, so runAsNonRoot can check it"
    assert any(
        op == "COPY" and args.startswith("--from=builder") and "/venv" in args for op, args in final
    )
    runs = " ".join(args for op, args in final if op == "RUN")
    assert not re.search(r"apt-get|build-essential|gcc", runs), (
        "no build tools in the runtime image"
    )
    env = " ".join(args for op, args in final if op == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "PYTHONUNBUFFERED=1" in env
    assert {"ENTRYPOINT", "CMD", "HEALTHCHECK"} <= {op for op, _ in final}
    assert stage_chain(stages[-1]["name"])[0]["base"] == stage_chain("builder")[0]["base"], (
        "one Python in both stages"
    )


def test_the_migrations_ship_inside_the_shared_package_and_the_build_checks_them() -> None:
    """shared.db reads its migrations from package data, so a non-editable install has them."""
    assert db.MIGRATIONS_DIR == Path(shared.__file__).resolve().parent / "migrations"
    assert db.migration_files(), "the repository has migrations"
    builder = next(s for s in dockerfile_stages() if s["name"] == "builder")
    assert any(op == "COPY" and args.split()[0] == "shared" for op, args in builder["instructions"])
    runs = " ".join(args for op, args in builder["instructions"] if op == "RUN")
    assert "migration_files()" in runs, "the build checks the installed code finds them"
    assert re.search(r"python -I -c", runs), "the check must not import the source tree"


def test_dev_override_mounts_the_code_over_the_installed_packages() -> None:
    """`python -m` puts /app first on sys.path: each mount must land where its import name says."""
    migrations = Path("/app") / db.MIGRATIONS_DIR.relative_to(
        Path(shared.__file__).resolve().parent.parent
    )
    for svc, service in load(DEV)["services"].items():
        mounts = [v.split(":") for v in service["volumes"]]
        packages = {}
        for source, target, *mode in mounts:
            assert mode == ["ro"], f"{svc}: mount {source} read-only"
            path = (ROOT / source).resolve()
            assert path.is_dir(), f"{svc}: {source} does not exist"
            if Path(target) == migrations:
                assert path == db.MIGRATIONS_DIR
                continue
            spec = importlib.util.find_spec(Path(target).name)
            assert (
                Path(target).parent == Path("/app") and spec and spec.submodule_search_locations
            ), target
            assert Path(spec.submodule_search_locations[0]).resolve() == path, (
                f"{target} is not {source}"
            )
            packages[Path(target).name] = path
        assert {"shared", "api", "notifier", "webhook_dispatcher", "audit"} <= set(packages), svc
    base_workdir = [args for op, args in final_instructions() if op == "WORKDIR"]
    assert base_workdir[-1] == "/app"


def test_env_example_lists_every_setting_and_parses() -> None:
    listed = env_example()
    missing = set(Settings.model_fields) - set(listed)
    assert not missing, f"add to .env.example: {sorted(missing)}"
    secret = "s" * 64
    values = {n: v for n, v in listed.items() if v is not None and n in Settings.model_fields}
    values |= {n: secret for n, f in Settings.model_fields.items() if f.is_required()}
    Settings(_env_file=None, **values)  # type: ignore[call-arg, arg-type]


def test_dockerignore_keeps_secrets_out_and_the_build_inputs_in() -> None:
    patterns = [
        p.strip()
        for p in (ROOT / ".dockerignore").read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]
    for path in (".env", ".venv", ".git"):
        assert path in patterns, f".dockerignore lacks {path}"
    sources = {
        p
        for op, args in dockerfile_instructions()
        if op == "COPY" and not args.startswith("--")
        for p in args.split()[:-1]
    }
    for source in sources:
        assert source not in patterns and source.split("/")[0] not in patterns, (
            f".dockerignore drops {source}"
        )
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which does not exist"


def compose_binary() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(
            ["docker", "compose", "version"], check=False, capture_output=True, timeout=30
        )
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


@pytest.mark.skipif(compose_binary() is None, reason="no docker-compose or docker compose here")
@pytest.mark.parametrize("files", [[BASE], [BASE, DEV]], ids=["base", "dev"])
def test_docker_compose_accepts_the_files(files: list[str], tmp_path: Path) -> None:
    binary = compose_binary()
    assert binary
    for name in files:
        shutil.copy(ROOT / name, tmp_path / name)
    values = {n: v for n, v in env_example().items() if v is not None}
    values |= {n: "s" * 64 for n, f in Settings.model_fields.items() if f.is_required()}
    values |= {"POSTGRES_PASSWORD": "pgpassword", "RABBITMQ_DEFAULT_PASS": "mqpassword"}
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    args = [a for name in files for a in ("-f", name)]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    result = subprocess.run(
        [*binary, *args, "config", "-q"],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
