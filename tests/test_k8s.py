"""The Kubernetes nightly (scripts/nightly/k8s/): the KubeRay RayJob, the CronJob that creates it each
night, the image they run (Dockerfile) and the config they mount agree with each other and with
hpsearch. No cluster and no docker: the manifests are parsed, their names and paths cross-checked,
and the CronJob's launcher script runs against a fake kubectl."""

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath

import pytest
import yaml
from packaging.requirements import Requirement

from hpsearch.environment import default_storage
from hpsearch.nightly.config import load_config
from hpsearch.nightly.outcome import EXIT_BAD_INPUT, EXIT_BUSY, EXIT_CODES, EXIT_CRASHED
from hpsearch.nightly.verdict import EXIT_NO_RESULT, EXIT_WORSE
from hpsearch.storage import is_uri
from hpsearch.vocab import VERSION

REPO = Path(__file__).resolve().parent.parent
K8S = REPO / "scripts" / "nightly" / "k8s"
TERMINAL = ("Complete", "Failed", "ValidationFailed")  # KubeRay's final jobDeploymentStatus values


def _docs() -> dict[str, list[dict]]:
    return {p.name: [d for d in yaml.safe_load_all(p.read_text()) if d is not None] for p in sorted(K8S.glob("*.yaml"))}


def _one(kind: str) -> dict:
    found = [d for docs in _docs().values() for d in docs if d.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind} in scripts/nightly/k8s/*.yaml, found {len(found)}"
    return found[0]


def _pyproject() -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _ray_pods(rayjob: dict) -> list[dict]:
    spec = rayjob["spec"]["rayClusterSpec"]
    return [spec["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in spec["workerGroupSpecs"]]


def _generated(name: str) -> list[str]:
    """The files kustomization.yaml makes the ConfigMap ``name`` from (key=file or file)."""
    kustomization = _one("Kustomization")
    for gen in kustomization.get("configMapGenerator", []):
        if gen["name"] == name:
            return [f.split("=", 1)[-1] for f in gen.get("files", [])]
    raise AssertionError(f"no ConfigMap {name!r} in kustomization.yaml's configMapGenerator")


# -- the Dockerfile ----------------------------------------------------------------------------

class Dockerfile:
    def __init__(self, path: Path):
        self.text = path.read_text()
        lines = [line.strip() for line in self.text.splitlines()]
        args = dict(re.match(r"ARG (\w+)=(\S+)", line).groups() for line in lines if re.match(r"ARG \w+=", line))
        self.base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], next(ln for ln in lines if ln.startswith("FROM "))[5:])
        self.copies = [line.split()[1:] for line in lines if line.startswith("COPY ")]
        build = re.search(r"docker build -f (\S+) -t (\S+) \.$", self.text, re.M)
        assert build, "the Dockerfile's comment gives no `docker build -f ... -t IMAGE .` line"
        self.build_file, self.tag = build.groups()
        self.runs = " ".join(line for line in lines if line.startswith("RUN "))


def _dockerignored(rel: str) -> bool:
    """Whether .dockerignore leaves ``rel`` (or a folder above it) out of the build context: a
    pattern matches a path from the root; ``**/`` in front, a name at any depth."""
    patterns = [p.strip() for p in (REPO / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")]
    parts = PurePosixPath(rel).parts
    for i in range(1, len(parts) + 1):
        for p in patterns:
            if fnmatch("/".join(parts[:i]), p) or (p.startswith("**/") and fnmatch(parts[i - 1], p[3:])):
                return True
    return False


def _in_image(container_path: str) -> Path:
    """The repository file that the Dockerfile's COPY puts at ``container_path``, or fail."""
    for args in Dockerfile(K8S / "Dockerfile").copies:
        *sources, dest = [a for a in args if not a.startswith("--")]
        for source in sources:
            if container_path.startswith(dest.rstrip("/") + "/"):
                rel = str(PurePosixPath(source) / PurePosixPath(container_path).relative_to(dest))
                rel = os.path.normpath(rel)
                assert not _dockerignored(rel), f"{rel} is in .dockerignore, so not at {container_path} in the image"
                return REPO / rel
    raise AssertionError(f"no COPY in the Dockerfile puts anything at {container_path}")


def test_every_manifest_parses_and_names_its_kind():
    docs = _docs()
    assert {"rayjob.yaml", "cronjob.yaml", "kustomization.yaml"} <= set(docs), sorted(docs)
    for name, file_docs in docs.items():
        for doc in file_docs:
            assert isinstance(doc, dict) and doc.get("apiVersion") and doc.get("kind"), f"{name}: {str(doc)[:80]}"
    kinds = sorted(d["kind"] for file_docs in docs.values() for d in file_docs)
    assert kinds == sorted(["RayJob", "ServiceAccount", "Role", "RoleBinding", "CronJob", "Kustomization"]), kinds


def test_the_rayjob_runs_tonight_on_a_cluster_of_its_own():
    job = _one("RayJob")
    assert job["apiVersion"] == "ray.io/v1", job["apiVersion"]
    # The CronJob creates one every night: a fixed name would collide with yesterday's.
    assert job["metadata"].get("generateName") and "name" not in job["metadata"], job["metadata"]
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True, "the cluster must go away when the night is over"
    assert isinstance(spec.get("ttlSecondsAfterFinished"), int) and spec["ttlSecondsAfterFinished"] > 0, \
        "the launcher reads the submitter's log after the night: KubeRay must keep it a while"
    assert spec.get("backoffLimit", 0) == 0, "KubeRay's retries would rerun a verdict (exit 1); the CronJob retries"
    cluster = spec["rayClusterSpec"]
    assert cluster["headGroupSpec"] and cluster["workerGroupSpecs"], "a head and at least one worker group"
    import ray

    base = Dockerfile(K8S / "Dockerfile").base
    assert cluster["rayVersion"] == re.search(r":(\d+\.\d+\.\d+)", base).group(1), (cluster["rayVersion"], base)
    assert cluster["rayVersion"].split(".")[:2] == ray.__version__.split(".")[:2], \
        f"rayVersion {cluster['rayVersion']} is not the installed Ray {ray.__version__}"


def test_the_entrypoint_reads_the_config_the_configmap_mounts():
    job = _one("RayJob")
    words = shlex.split(job["spec"]["entrypoint"])
    assert words[:2] == ["hpsearch", "nightly"], f"the RayJob does not run hpsearch nightly: {words}"
    assert "--no-progress" in words, "no terminal on the head: a progress bar would fill the log"
    config = PurePosixPath(words[2])
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for c in head["containers"] for m in c.get("volumeMounts", [])}
    assert str(config.parent) in mounts, f"{config} is not in a folder mounted on the head ({sorted(mounts)})"
    volume = next(v for v in head["volumes"] if v["name"] == mounts[str(config.parent)])
    assert "configMap" in volume, f"{config.parent} is not a ConfigMap: {volume}"
    files = _generated(volume["configMap"]["name"])
    assert config.name in [Path(f).name for f in files], f"ConfigMap {volume['configMap']['name']} has {files}, not {config.name}"
    cfg = load_config(K8S / next(f for f in files if Path(f).name == config.name))  # every key checked by hpsearch
    assert cfg.address == "auto", f"the entrypoint runs on the head: join its cluster, got {cfg.address!r}"
    # The space is a path inside the image: the Dockerfile must put the repository's module there.
    module = _in_image(cfg.space)
    assert module.is_file(), f"the image has no {cfg.space}: {module} does not exist"


def test_every_ray_container_runs_the_image_the_dockerfile_builds():
    docker = Dockerfile(K8S / "Dockerfile")
    assert (REPO / docker.build_file).resolve() == (K8S / "Dockerfile").resolve(), docker.build_file
    name, _, version = docker.tag.partition(":")
    # pyproject.toml's version, or (a dynamic one) the attribute it names: hpsearch.vocab.VERSION.
    assert version == _pyproject()["project"].get("version", VERSION), f"image tag {docker.tag} is not hpsearch's version"
    for pod in _ray_pods(_one("RayJob")):
        for container in pod["containers"]:
            image = container["image"].rsplit("/", 1)[-1]  # a registry in front is expected
            assert image == docker.tag, f"{container['name']} runs {container['image']}, the Dockerfile builds {docker.tag}"


def test_the_image_has_the_installed_ray_a_supported_python_and_the_pinned_torch():
    import ray

    docker = Dockerfile(K8S / "Dockerfile")
    m = re.fullmatch(r"rayproject/ray:(\d+)\.(\d+)\.\d+-py(\d)(\d+)", docker.base)
    assert m, f"base image {docker.base} is not rayproject/ray:X.Y.Z-pyNNN"
    assert m.group(1, 2) == tuple(ray.__version__.split(".")[:2]), f"{docker.base} vs installed Ray {ray.__version__}"
    project = _pyproject()["project"]
    python = f"{m.group(3)}.{m.group(4)}"
    assert Requirement(f"python{project['requires-python']}").specifier.contains(python), \
        f"the image's Python {python} is outside requires-python {project['requires-python']}"
    pins = re.findall(r"\btorch==(\S+)", docker.runs)
    assert len(pins) == 1, f"the Dockerfile should pin torch once: {pins}"
    torch = next(Requirement(d) for d in project["dependencies"] if Requirement(d).name == "torch")
    assert torch.specifier.contains(pins[0]), f"torch=={pins[0]} is outside pyproject.toml's {torch}"
    for args in docker.copies:
        *sources, _ = [a for a in args if not a.startswith("--")]
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"
    for needed in ("pyproject.toml", "hpsearch/cli.py", "spaces/mlp.py"):
        assert not _dockerignored(needed), f".dockerignore leaves {needed} out of the image"
    for heavy in (".git", ".venv", "mlflow/mlflow.db", "test-artifacts"):
        assert _dockerignored(heavy), f".dockerignore lets {heavy} into the build context"


def test_the_environment_is_what_hpsearch_reads(monkeypatch):
    sources = "\n".join(p.read_text() for p in (REPO / "hpsearch").rglob("*.py"))
    for pod in _ray_pods(_one("RayJob")):
        for container in pod["containers"]:
            env = {e["name"]: e for e in container.get("env", [])}
            assert {"HPSEARCH_STORAGE", "MLFLOW_TRACKING_URI"} <= set(env), f"{container['name']}: {sorted(env)}"
            for name in env:
                if name.startswith(("HPSEARCH_", "MLFLOW_")):
                    assert f'"{name}"' in sources, f"{container['name']} sets {name}, which hpsearch never reads"
            storage = env["HPSEARCH_STORAGE"]["value"]
            # hpsearch must take the value as it is (a bucket's URI stays a URI, not a local folder).
            monkeypatch.setenv("HPSEARCH_STORAGE", storage)
            assert default_storage() == storage and is_uri(default_storage()) == is_uri(storage), \
                f"hpsearch reads HPSEARCH_STORAGE={storage} as {default_storage()}"
            if storage.startswith("s3://"):  # every Ray pod writes to the bucket: each needs its credentials
                for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                    ref = env.get(key, {}).get("valueFrom", {}).get("secretKeyRef", {})
                    assert ref.get("key") == key and not ref.get("optional"), f"{container['name']}: {key} from {ref}"


CRON_BOUNDS = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]


def _cron_errors(expression: str) -> list[str]:
    fields = expression.split()
    if len(fields) != 5:
        return [f"{len(fields)} fields, not 5"]
    errors = []
    for field, (low, high) in zip(fields, CRON_BOUNDS):
        for item in field.split(","):
            m = re.fullmatch(r"(\*|(\d+)(?:-(\d+))?)(?:/(\d+))?", item)
            numbers = [int(n) for n in (m.groups()[1:3] if m else ()) if n is not None]
            if not m or not all(low <= n <= high for n in numbers) or (m.group(4) is not None and int(m.group(4)) < 1):
                errors.append(f"{item!r} is not a cron field within {low}-{high}")
    return errors


def test_the_cronjob_creates_one_rayjob_a_night_and_retries_a_crash_not_a_verdict():
    assert _cron_errors("0 2 * *") and _cron_errors("60 2 * * *") and not _cron_errors("*/15 0-6 1,15 * 1-5")
    cron = _one("CronJob")
    spec = cron["spec"]
    assert not _cron_errors(spec["schedule"]), _cron_errors(spec["schedule"])
    assert spec["concurrencyPolicy"] == "Forbid", "two nights at once would share tonight's storage"
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] >= 1, "a crash (a lost node, an evicted pod) should be retried"
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never", "podFailurePolicy needs restartPolicy Never"
    (launch,) = pod["containers"]
    fail_job = [r for r in job["podFailurePolicy"]["rules"] if r["action"] == "FailJob"]
    assert len(fail_job) == 1 and fail_job[0]["onExitCodes"]["containerName"] == launch["name"], fail_job
    # hpsearch's answers end the job at once; anything else (a crash, a signal) may be retried.
    codes = fail_job[0]["onExitCodes"]
    assert codes["operator"] == "In" and set(codes["values"]) == {EXIT_WORSE, EXIT_BAD_INPUT, EXIT_NO_RESULT}, codes
    assert all(c in EXIT_CODES for c in codes["values"]), codes
    # A crashed night (hpsearch's 4) is restarted: no rule fails the job on it, and retries are left.
    assert EXIT_CRASHED not in codes["values"] and job["backoffLimit"] >= 1
    assert not [r for r in job["podFailurePolicy"]["rules"] if r["action"] == "FailJob"
                and EXIT_CRASHED in r.get("onExitCodes", {}).get("values", [])]
    # The launcher reads the RayJob from the ConfigMap made of rayjob.yaml, mounted where it says.
    script = _launcher()
    mounts = {m["name"]: m["mountPath"] for m in launch["volumeMounts"]}
    volume = next(v for v in pod["volumes"] if v["name"] in mounts and "configMap" in v)
    assert "rayjob.yaml" in _generated(volume["configMap"]["name"]), volume
    assert f"create -f {mounts[volume['name']]}/rayjob.yaml" in script, "the launcher creates no RayJob from the mount"
    # It finds earlier nights by the RayJob's label, with the rights its Role gives.
    label = re.search(r"^label=(\S+)$", script, re.M).group(1)
    assert label in [f"{k}={v}" for k, v in _one("RayJob")["metadata"]["labels"].items()], label
    assert pod["serviceAccountName"] == _one("ServiceAccount")["metadata"]["name"]
    binding = _one("RoleBinding")
    assert binding["roleRef"]["name"] == _one("Role")["metadata"]["name"]
    assert [s["name"] for s in binding["subjects"]] == [pod["serviceAccountName"]], binding["subjects"]
    rights = {(g, r): set(rule["verbs"]) for rule in _one("Role")["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    assert {"create", "get", "list", "delete"} <= rights.get(("ray.io", "rayjobs"), set()), rights
    assert "get" in rights.get(("", "pods/log"), set()), "the launcher prints the night's log"


def test_the_kustomization_makes_every_configmap_the_manifests_name():
    kustomization = _one("Kustomization")
    for name in kustomization["resources"] + [f for g in kustomization["configMapGenerator"] for f in g["files"]]:
        assert (K8S / name.split("=", 1)[-1]).is_file(), f"kustomization.yaml names {name}, which is not there"
    assert "rayjob.yaml" not in kustomization["resources"], "applied, the RayJob would run a night at once"
    # rayjob.yaml names its ConfigMap from inside another ConfigMap's data, where a hashed name is not updated.
    assert kustomization["generatorOptions"]["disableNameSuffixHash"] is True
    pods = _ray_pods(_one("RayJob")) + [_one("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]]
    wanted = {v["configMap"]["name"] for pod in pods for v in pod.get("volumes", []) if "configMap" in v}
    made = {g["name"] for g in kustomization["configMapGenerator"]}
    assert wanted and wanted <= made, f"the pods mount ConfigMaps {sorted(wanted)}, kustomization.yaml makes {sorted(made)}"


# -- the launcher, against a fake kubectl ------------------------------------------------------

def _launcher() -> str:
    command = _one("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:2] == ["/bin/sh", "-c"], command
    return command[2]


FAKE_KUBECTL = '''#!{python}
import os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(" ".join(args) + "\\n")
if args[0] == os.environ.get("FAKE_FAIL"):
    sys.exit(1)
if args[:2] == ["get", "rayjobs"]:
    print(os.environ.get("FAKE_LIST", ""), end="")
elif args[0] == "create":
    print("rayjob.ray.io/hpsearch-nightly-new")
elif args[0] == "get":
    field = next(a for a in args if a.startswith("jsonpath="))[len("jsonpath="):]
    if field == "{{.status.jobDeploymentStatus}}":  # the states in turn, the last one for ever
        states, count = os.environ["FAKE_STATES"].split(","), os.environ["FAKE_LOG"] + ".polls"
        n = len(open(count).read()) if os.path.exists(count) else 0
        open(count, "a").write(".")
        print(states[min(n, len(states) - 1)], end="")
    else:
        print(os.environ.get({{"{{.status.jobStatus}}": "FAKE_STATUS", "{{.status.message}}": "FAKE_MESSAGE"}}[field], ""), end="")
elif args[0] == "logs":
    print("tonight: better")
'''


def _ray_failure(code: int) -> str:
    """The message Ray's job supervisor leaves (the RayJob's status.message) when the entrypoint
    exits with ``code``; the log lines after the first may say "exit code" too."""
    return (f"Job entrypoint command failed with exit code {code}, last available logs (truncated to 20,000 chars):\n"
            "hpsearch nightly: tonight is worse\na trial failed with exit code 9, retried\n")


def test_ray_still_words_a_failed_entrypoint_as_the_launcher_reads_it():
    ray_dir = Path(importlib.util.find_spec("ray").submodule_search_locations[0])
    source = (ray_dir / "dashboard" / "modules" / "job" / "job_supervisor.py").read_text()
    assert '"Job entrypoint command "\n' in source and 'f"failed with exit code {return_code}, "' in source, \
        "Ray's job supervisor words a failed entrypoint differently: update the launcher's sed in cronjob.yaml"


def _run_launcher(tmp_path, states, status="", message="", listing="", fail=None):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "kubectl").write_text(FAKE_KUBECTL.format(python=sys.executable))
    (bin_dir / "sleep").write_text("#!/bin/sh\n")
    for tool in ("kubectl", "sleep"):
        (bin_dir / tool).chmod(0o755)
    log = tmp_path / "kubectl.log"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_LOG": str(log),
           "FAKE_STATES": ",".join(states), "FAKE_STATUS": status, "FAKE_MESSAGE": message, "FAKE_LIST": listing}
    if fail:
        env["FAKE_FAIL"] = fail
    out = subprocess.run(["/bin/sh", "-c", _launcher()], env=env, capture_output=True, text=True, timeout=60)
    calls = log.read_text().splitlines() if log.exists() else []
    return out, calls


@pytest.mark.parametrize("states, status, message, code", [
    (["", "Initializing", "Running", "Complete"], "SUCCEEDED", "Job finished successfully.", 0),
    (["Failed"], "FAILED", _ray_failure(EXIT_WORSE), EXIT_WORSE),  # a verdict: the job fails, no retry
    (["Failed"], "FAILED", _ray_failure(EXIT_BAD_INPUT), EXIT_BAD_INPUT),
    (["Failed"], "FAILED", _ray_failure(EXIT_BUSY), 0),  # another copy runs: nothing done, as with systemd
    (["Failed"], "FAILED", _ray_failure(EXIT_NO_RESULT), EXIT_NO_RESULT),  # an answer: the job fails, no retry
    (["Failed"], "FAILED", _ray_failure(EXIT_CRASHED), EXIT_CRASHED),  # a crash: retried, resumes the night
    (["Failed"], "FAILED", _ray_failure(143), 143),  # SIGTERM (a lost node): retried, resumes the night
    (["Failed"], "FAILED", "Job entrypoint command failed with exit code 1. No logs available.", EXIT_WORSE),
    (["Failed"], "", "RayCluster did not become ready", 4),  # no exit code: the cluster failed, retried
    (["ValidationFailed"], "", "spec.rayClusterSpec is invalid", EXIT_BAD_INPUT),
])
def test_the_launcher_exits_with_hpsearchs_status(tmp_path, states, status, message, code):
    out, calls = _run_launcher(tmp_path, states, status, message)
    assert out.returncode == code, (out.returncode, out.stdout, out.stderr)
    assert sum(c.startswith("create -f ") for c in calls) == 1, calls
    assert any(c.startswith("logs job/hpsearch-nightly-new") for c in calls), "the night's output is not printed"
    assert "tonight: better" in out.stdout and status in out.stdout, out.stdout


def test_a_retry_waits_for_the_rayjob_still_running_and_old_nights_are_deleted(tmp_path):
    finished = [f"hpsearch-nightly-{i}=Complete" for i in range(8)]
    out, calls = _run_launcher(tmp_path, ["Running", "Complete"], "SUCCEEDED", "Job finished successfully.",
                               listing=" ".join(finished + ["hpsearch-nightly-now=Running"]) + " ")
    assert out.returncode == 0, (out.stdout, out.stderr)
    assert not any(c.startswith("create") for c in calls), f"a second RayJob was started: {calls}"
    assert "get rayjob.ray.io/hpsearch-nightly-now -o jsonpath={.status.jobDeploymentStatus}" in calls, calls
    # 9 RayJobs: the 2 oldest go, the 7 latest stay.
    assert [c.split()[2] for c in calls if c.startswith("delete")] == ["hpsearch-nightly-0", "hpsearch-nightly-1"], calls


def test_the_launcher_retries_when_the_api_server_does_not_answer(tmp_path):
    out, calls = _run_launcher(tmp_path, ["Complete"], fail="get")
    assert out.returncode == 4, (out.returncode, out.stdout, out.stderr)
    assert out.returncode not in (EXIT_WORSE, EXIT_BAD_INPUT), "an API error must not read as a verdict"
    assert not any(c.startswith("create") for c in calls), calls
