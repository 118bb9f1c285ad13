"""deploy/: the Kubernetes Indexed Job is valid YAML and asks mailrestore only what it offers.

A manifest is code nobody runs in CI: this test reads it as Kubernetes
would (YAML), checks the parts a shard relies on (indexed completions, retries
per index, K from the completion index and N from the completions, a
per-index state directory, the password from a Secret file) and parses its
mailrestore command line with the CLI itself, so a renamed option fails here.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

from restore.cli import cli

MANIFEST = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes" / "restore-job.yaml"


def load_job() -> dict:
    docs = list(yaml.safe_load_all(MANIFEST.read_text(encoding="utf-8")))
    assert len(docs) == 1
    return docs[0]


def mailrestore_words(container: dict, index: int) -> tuple[list[str], str]:
    """The mailrestore argv the container runs for completion index ``index``; its stdout file."""
    assert container["command"] == ["/bin/sh", "-c"]
    script = container["args"][0].replace("$JOB_COMPLETION_INDEX", str(index))
    words = shlex.split(script)
    assert words[:2] == ["exec", "mailrestore"]
    redirect = words.index(">")
    return words[2:redirect], words[redirect + 1]


def test_the_job_is_indexed_and_retries_each_shard_on_its_own():
    job = load_job()
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["backoffLimitPerIndex"] >= 1
    assert spec["parallelism"] == spec["completions"]
    assert spec["template"]["spec"]["restartPolicy"] == "Never"


def test_every_option_the_job_passes_exists_and_parses():
    job = load_job()
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    shards = job["spec"]["completions"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for index in (0, shards - 1):
        words, report = mailrestore_words(container, index)
        command = cli.commands[words[0]]
        known = {opt for param in command.params for opt in getattr(param, "opts", ())}
        flags = [w for w in words[1:] if w.startswith("--")]
        assert set(flags) <= known, f"not options of mailrestore {words[0]}: {set(flags) - known}"
        ctx = command.make_context(words[0], words[1:])
        opts = ctx.params
        assert opts["shard"] == f"{index}/{shards}"
        assert opts["as_json"]
        # catalog, journal and report: on the state volume, in the shard's own directory
        state = mounts["state"]
        assert "$(JOB_COMPLETION_INDEX)" in state["subPathExpr"]
        for path in (opts["catalog"], opts["state"], report):
            assert path.startswith(state["mountPath"] + "/")
        # the password: a file from a Secret, never on the command line
        secret_dir = str(Path(opts["password_file"]).parent)
        (secret,) = [m for m in mounts.values() if m["mountPath"] == secret_dir]
        source = volumes[secret["name"]]["secret"]
        assert Path(opts["password_file"]).name in [i["path"] for i in source["items"]]
        assert not any("pass" in w.lower() for w in words if not w.startswith("--password-file")
                       and w != opts["password_file"])
        # the archive is read-only
        archive = next(m for m in mounts.values()
                       if opts["archives"][0].startswith(f"eml:{m['mountPath']}"))
        assert archive["readOnly"] and volumes[archive["name"]]["persistentVolumeClaim"]["readOnly"]
