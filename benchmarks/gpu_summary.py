#!/usr/bin/env python
"""Collect the outputs of ``benchmarks/gpu_check.sh`` into one JSON and print a one-screen summary.

Reads, from the work folder: ``stages.txt`` (name, exit status, seconds, limit per
stage), the JUnit XML of the two pytest stages, the step-time JSONs of both nets,
the tutorial's log and the MNIST run's ``results.json``; writes ``--out`` with all of
it plus the issue-14 targets, each stated as met or missed with its numbers:

* ra-bug at rank 80 on the 5120 net ≤ 2× the dense step of the same run;
* bug at rank 80 ≤ 1.5× the dense step;
* a 5-epoch MNIST run of the README's MLP (ra-bug, τ = 0.1) in under 60 s, end to end;
* the parity tests pass.

Exit status 0 when every stage exited 0, else 1 (targets are reported, not enforced).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import xml.etree.ElementTree as ET


def read_stages(work) -> dict:
    out = {}
    path = os.path.join(work, "stages.txt")
    if os.path.exists(path):
        for line in open(path):
            name, rc, sec, limit = line.split()
            out[name] = {"rc": int(rc), "seconds": round(float(sec), 2), "timeout_s": int(limit),
                         "timed_out": int(rc) in (124, 137)}
    return out


def read_junit(path) -> dict | None:
    if not os.path.exists(path):
        return None
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    res = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    res["passed"] = res["tests"] - res["failures"] - res["errors"] - res["skipped"]
    res["failed_names"] = [f"{c.get('classname')}::{c.get('name')}" for c in root.iter("testcase")
                           if c.find("failure") is not None or c.find("error") is not None][:50]
    return res


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def tail(path, n=12) -> list:
    try:
        with open(path, errors="replace") as f:
            return [line.rstrip("\n") for line in f.readlines()[-n:]]
    except OSError:
        return []


def row(bench, method, rank=None, solver=None):
    """The first result row of ``method`` (at ``rank``, ``solver``) in a step_time document, or None."""
    if not bench:
        return None
    for net in bench.get("networks", {}).values():
        for r in net["results"]:
            if r["method"] == method and (rank is None or r["rank"] == rank) and (solver is None or r.get("solver") == solver):
                return r
    return None


def targets(doc) -> list:
    out = []
    paper, thesis, stages = doc["bench_paper"], doc["bench_thesis"], doc["stages"]
    for method, limit in (("ra-bug", 2.0), ("bug", 1.5)):
        r = row(paper, method, rank=80)
        value = None if r is None else r["ratio_to_dense"]
        out.append({"target": f"{method} at rank 80 on the 5120 net <= {limit}x the dense step (CuPy, same run)",
                    "value": value, "limit": limit, "met": None if value is None else bool(value <= limit),
                    "ms": None if r is None else r["ms_median"],
                    "dense_ms": None if r is None else r["ratio_to_dense"] and r["ms_median"] / r["ratio_to_dense"]})
    m = stages.get("mnist5")
    s = (doc.get("mnist_run") or {}).get("summary") or {}
    out.append({"target": "5 epochs of MNIST, README MLP (ra-bug, tau 0.1), end to end < 60 s",
                "value": None if m is None or m["rc"] != 0 else m["seconds"], "limit": 60.0,
                "met": None if m is None or m["rc"] != 0 else bool(m["seconds"] < 60.0),
                "test_acc": s.get("test_acc"), "ms_per_step": s.get("ms_per_step"), "ranks": s.get("ranks")})
    p = doc["parity"]
    out.append({"target": "parity tests (NumPy vs CuPy: rtol 1e-5 float32, 1e-10 float64) pass",
                "value": None if p is None else f"{p['passed']} passed, {p['failures'] + p['errors']} failed",
                "met": None if p is None else bool(p["failures"] + p["errors"] == 0 and p["passed"] > 0)})
    return out


def summary_lines(doc) -> list:
    L = [f"GPU check on {doc['device']} (backend {doc['backend']}), {doc['total_s']} s in total"
         + ("  [DRY RUN on the CPU]" if doc["dry_run"] else "")]
    L.append("stages: " + ", ".join(f"{k} {'ok' if v['rc'] == 0 else 'TIMEOUT' if v['timed_out'] else 'rc=%d' % v['rc']}"
                                    f" {v['seconds']:.0f}s" for k, v in doc["stages"].items()))
    for key in ("parity", "gpu_tests"):
        t = doc[key]
        if t is not None:
            L.append(f"{key}: {t['passed']} passed, {t['failures']} failed, {t['errors']} errors, {t['skipped']} skipped"
                     + (f"  first failure: {t['failed_names'][0]}" if t["failed_names"] else ""))
    for name in ("bench_paper", "bench_thesis"):
        b = doc[name]
        if not b:
            L.append(f"{name}: no result")
            continue
        for net, d in b["networks"].items():
            L.append(f"{net} net {d['widths']} batch {d['batch']}: dense {d['dense_ms'] or float('nan'):.2f} ms/step")
            cells = []
            for r in d["results"]:
                if r["method"] == "dense":
                    continue
                rank = ",".join(map(str, r["rank"])) if isinstance(r["rank"], list) else r["rank"]
                tag = f"{r['method']}@{rank}" + (f"/{r['solver']}" if r.get("solver") else "")
                cells.append(f"{tag} {r['ms_median']:.2f}ms ({r['ratio_to_dense']:.2f}x)")
            for i in range(0, len(cells), 4):
                L.append("   " + "; ".join(cells[i:i + 4]))
        if b.get("truncation_micro"):
            by_k = {}
            for t in b["truncation_micro"]:
                by_k.setdefault(t["k"], []).append(f"{t['solver']} {t['ms_median']:.2f}")
            L.append("truncate(k×k, rank k/2) ms: " + "; ".join(f"k={k}: " + ", ".join(v) for k, v in by_k.items()))
    for t in doc["targets"]:
        met = {True: "MET", False: "MISSED", None: "not measured"}[t["met"]]
        v = t["value"]
        L.append(f"[{met:12}] {t['target']}: " + (f"{v:.3g}" if isinstance(v, float) else str(v)))
    if doc["tutorial07_tail"]:
        L.append("tutorial 07: " + " | ".join(x for x in doc["tutorial07_tail"][-3:] if x.strip())[:230])
    L.append(f"wrote {doc['out']}")
    return L


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", required=True)
    p.add_argument("--device", required=True)
    p.add_argument("--backend", default="cupy")
    p.add_argument("--out", required=True)
    p.add_argument("--total-s", type=float, default=None)
    p.add_argument("--dry-run", action="store_true")
    a = p.parse_args(argv)
    w = a.work
    doc = {
        "benchmark": "gpu_check", "issue": 14, "device": a.device, "backend": a.backend, "dry_run": a.dry_run,
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "host": {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count()},
        "total_s": a.total_s, "out": a.out,
        "stages": read_stages(w),
        "parity": read_junit(os.path.join(w, "parity.xml")),
        "gpu_tests": read_junit(os.path.join(w, "gpu_tests.xml")),
        "bench_paper": read_json(os.path.join(w, "bench_paper.json")),
        "bench_thesis": read_json(os.path.join(w, "bench_thesis.json")),
        "mnist_run": read_json(os.path.join(w, "mnist_run", "results.json")),
        "tutorial07_tail": tail(os.path.join(w, "tutorial07.log")),
        "logs_tail": {k: tail(os.path.join(w, f"{k}.log"), 6) for k in read_stages(w)},
    }
    if doc["mnist_run"]:
        doc["mnist_run"].pop("steps", None)  # per-step history: too long for the record
    try:
        import cupy  # noqa: F401

        doc["cupy_version"] = cupy.__version__
        doc["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
    except Exception:
        doc["cupy_version"] = None
    doc["targets"] = targets(doc)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(doc, f, indent=1, default=str)
    print("\n".join(summary_lines(doc)))
    ok = bool(doc["stages"]) and all(v["rc"] == 0 for v in doc["stages"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
