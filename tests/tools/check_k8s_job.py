#!/usr/bin/env python3
"""Checks deploy/k8s/convert-indexed-job.yaml: a structural schema check of the Kubernetes
objects it holds (the batch/v1 Job and v1 ConfigMap fields it uses, their types and allowed
values), the three steps (prepare, Indexed convert, assemble), and a dry run of each pod's shell
command with a fake `ladimo` that proves the indices cover every layer exactly once.
Prints "ok: ..." and exits 0, or prints every problem and exits 1. Needs python3-yaml."""
import os
import re
import stat
import subprocess
import sys
import tempfile

import yaml

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
JOB_SPEC_FIELDS = {"completionMode", "completions", "parallelism", "backoffLimit", "backoffLimitPerIndex",
                   "maxFailedIndexes", "activeDeadlineSeconds", "ttlSecondsAfterFinished", "template",
                   "podFailurePolicy", "suspend", "selector", "manualSelector"}
POD_SPEC_FIELDS = {"restartPolicy", "containers", "volumes", "initContainers", "nodeSelector", "tolerations",
                   "affinity", "serviceAccountName", "securityContext"}
CONTAINER_FIELDS = {"name", "image", "command", "args", "env", "envFrom", "resources", "volumeMounts",
                    "workingDir", "imagePullPolicy", "securityContext"}

problems = []


def need(cond, what):
    if not cond:
        problems.append(what)
    return cond


def is_str_list(v):
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def check_quantity(where, q):
    need(isinstance(q, (str, int)) and re.match(r"^[0-9.]+(m|Ki|Mi|Gi|Ti|k|M|G|T)?$", str(q)),
         f"{where}: '{q}' is not a resource quantity")


def check_job(doc, configmaps):
    name = doc["metadata"]["name"]
    spec = doc.get("spec")
    if not need(isinstance(spec, dict), f"Job {name}: spec missing"):
        return
    for k in spec:
        need(k in JOB_SPEC_FIELDS, f"Job {name}: unknown spec field '{k}'")
    for k in ("completions", "parallelism", "backoffLimit", "backoffLimitPerIndex", "maxFailedIndexes"):
        if k in spec:
            need(isinstance(spec[k], int) and spec[k] >= 0, f"Job {name}: spec.{k} must be a non-negative integer")
    if "completionMode" in spec:
        need(spec["completionMode"] in ("Indexed", "NonIndexed"), f"Job {name}: completionMode '{spec['completionMode']}'")
    pod = spec.get("template", {}).get("spec")
    if not need(isinstance(pod, dict), f"Job {name}: spec.template.spec missing"):
        return
    for k in pod:
        need(k in POD_SPEC_FIELDS, f"Job {name}: unknown pod spec field '{k}'")
    need(pod.get("restartPolicy") in ("Never", "OnFailure"), f"Job {name}: restartPolicy must be Never or OnFailure")
    if "backoffLimitPerIndex" in spec:
        need(spec.get("completionMode") == "Indexed", f"Job {name}: backoffLimitPerIndex needs completionMode Indexed")
        need(pod.get("restartPolicy") == "Never", f"Job {name}: backoffLimitPerIndex needs restartPolicy Never")
    volumes = {}
    for v in pod.get("volumes", []):
        need(DNS_LABEL.match(v.get("name", "")), f"Job {name}: volume name '{v.get('name')}'")
        volumes[v.get("name")] = v
        if "persistentVolumeClaim" in v:
            need(isinstance(v["persistentVolumeClaim"].get("claimName"), str), f"Job {name}: volume {v['name']}: claimName")
    containers = pod.get("containers")
    if not need(isinstance(containers, list) and containers, f"Job {name}: no containers"):
        return
    for c in containers:
        cname = c.get("name", "")
        where = f"Job {name} container {cname}"
        for k in c:
            need(k in CONTAINER_FIELDS, f"{where}: unknown field '{k}'")
        need(DNS_LABEL.match(cname), f"{where}: name is not a DNS-1123 label")
        need(isinstance(c.get("image"), str) and c["image"], f"{where}: image missing")
        for k in ("command", "args"):
            if k in c:
                need(is_str_list(c[k]), f"{where}: {k} must be a list of strings")
        for e in c.get("envFrom", []):
            ref = e.get("configMapRef", {}).get("name")
            need(ref in configmaps, f"{where}: envFrom names ConfigMap '{ref}', not in the file")
        for m in c.get("volumeMounts", []):
            need(m.get("name") in volumes, f"{where}: volumeMount '{m.get('name')}' has no volume")
            need(isinstance(m.get("mountPath"), str) and m["mountPath"].startswith("/"), f"{where}: mountPath")
        for kind, quantities in c.get("resources", {}).items():
            need(kind in ("requests", "limits"), f"{where}: resources.{kind}")
            for res, q in quantities.items():
                check_quantity(f"{where}: {kind}.{res}", q)


def run_pod_command(container, env, fake_bin):
    cmd = container.get("command", []) + container.get("args", [])
    full_env = dict(os.environ, **env)
    full_env["PATH"] = fake_bin + os.pathsep + full_env.get("PATH", "")
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=30)


def main(path):
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    configmaps, jobs = {}, {}
    for d in docs:
        if not need(isinstance(d, dict) and {"apiVersion", "kind", "metadata"} <= d.keys(),
                    "an object without apiVersion/kind/metadata"):
            continue
        name = d["metadata"].get("name", "")
        need(DNS_LABEL.match(name) and len(name) <= 63, f"{d['kind']} name '{name}' is not a DNS-1123 label")
        need(d["metadata"].get("labels", {}).get("ladimo.step") in ("prepare", "convert", "assemble"),
             f"{d['kind']} {name}: label ladimo.step must be prepare, convert or assemble")
        if d["kind"] == "ConfigMap":
            need(d["apiVersion"] == "v1", f"ConfigMap {name}: apiVersion")
            for k, v in d.get("data", {}).items():
                need(isinstance(v, str), f"ConfigMap {name}: data.{k} must be a string (quote numbers)")
            configmaps[name] = d
        elif d["kind"] == "Job":
            need(d["apiVersion"] == "batch/v1", f"Job {name}: apiVersion must be batch/v1")
            jobs[name] = d
        else:
            need(False, f"unexpected kind {d['kind']}")
    for j in jobs.values():
        check_job(j, configmaps)
    steps = {j["metadata"]["labels"].get("ladimo.step"): j for j in jobs.values()}
    for s in ("prepare", "convert", "assemble"):
        need(s in steps, f"no Job labelled ladimo.step={s}")
    if problems or len(steps) < 3:
        return finish()
    indexed = steps["convert"]
    need(indexed["spec"].get("completionMode") == "Indexed", "the convert Job must have completionMode: Indexed")
    settings = next(iter(configmaps.values()))["data"]
    n, layers = int(settings["LADIMO_TASKS"]), int(settings["LADIMO_NUM_LAYERS"])
    need(indexed["spec"].get("completions") == n, "convert Job: completions must equal LADIMO_TASKS")
    need(indexed["spec"].get("parallelism", 1) <= n, "convert Job: parallelism above completions")
    if problems:
        return finish()
    with tempfile.TemporaryDirectory() as tmp:
        fake = os.path.join(tmp, "ladimo")
        with open(fake, "w") as f:
            f.write('#!/bin/sh\necho "ladimo $*"\n')
        os.chmod(fake, stat.S_IRWXU)
        out = run_pod_command(steps["prepare"]["spec"]["template"]["spec"]["containers"][0], settings, tmp)
        need(out.returncode == 0 and "--prepare" in out.stdout and settings["LADIMO_ARGS"] in out.stdout,
             f"prepare pod runs: {out.stdout}{out.stderr}")
        out = run_pod_command(steps["assemble"]["spec"]["template"]["spec"]["containers"][0], settings, tmp)
        need(out.returncode == 0 and out.stdout.startswith("ladimo assemble " + settings["LADIMO_PROJECT"]),
             f"assemble pod runs: {out.stdout}{out.stderr}")
        covered = []
        for i in range(n):
            env = dict(settings, JOB_COMPLETION_INDEX=str(i))
            out = run_pod_command(indexed["spec"]["template"]["spec"]["containers"][0], env, tmp)
            if not need(out.returncode == 0, f"index {i}: exit {out.returncode}: {out.stderr}"):
                continue
            m = re.search(r"--layers (\d+)-(\d+)", out.stdout)
            if m:
                need(settings["LADIMO_ARGS"] in out.stdout, f"index {i}: the settings are not passed")
                covered += range(int(m.group(1)), int(m.group(2)) + 1)
        need(sorted(covered) == list(range(layers)),
             f"the {n} indices cover layers {sorted(covered)}, expected each of 0..{layers - 1} once")
    return finish(f"ok: {len(docs)} objects; Indexed Job of {n} pods covers {layers} layers exactly once")


def finish(ok_message=None):
    if problems:
        for p in problems:
            print("problem:", p)
        return 1
    print(ok_message)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
