"""Composer latency per prompt over both prompt sets, with a warm catalog.

Baseline, measured in the same run: validating the resulting spec alone
(``parse_spec`` of its JSON), the floor any composer that emits a validated
spec pays. Prints p50/p99 of both and their ratio.

Run: .venv/bin/python bench/composer.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

from genos.composer import Rejection, compose, to_json
from genos.composer.knowledge import HostLimits, default_knowledge
from genos.errors import PromptError
from genos.spec import parse_spec

ROOT = Path(__file__).resolve().parents[1]
SETS = [ROOT.parent / "shared/composer/dev-prompts.jsonl", ROOT / "tests/composer/prompts.jsonl"]


def prompts() -> list[str]:
    out = []
    for path in SETS:
        if path.exists():
            out += [json.loads(line)["prompt"] for line in path.read_text().splitlines() if line]
    return out


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    rounds = parser.parse_args().rounds
    kb, host = default_knowledge(), HostLimits.from_host()
    texts = prompts()
    t0 = time.perf_counter()
    for release in ("bookworm", "trixie"):
        kb.index(release)
    warmup = time.perf_counter() - t0
    composed, validated = [], []
    for _ in range(rounds):
        for text in texts:
            start = time.perf_counter()
            try:
                result = compose(text, knowledge=kb, host=host)
            except PromptError:
                continue
            composed.append((time.perf_counter() - start) * 1000)
            if not isinstance(result, Rejection):
                data = to_json(result)["spec"]
                start = time.perf_counter()
                parse_spec(data)
                validated.append((time.perf_counter() - start) * 1000)
    print(
        f"machine: {platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}, {len(texts)} prompts x {rounds} rounds, "
        f"index load {warmup * 1000:.0f} ms (once)"
    )
    print(f"{'':24}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}")
    for name, samples in (("compose", composed), ("baseline: validate spec", validated)):
        print(
            f"{name:24}{pct(samples, 0.5):10.3f}{pct(samples, 0.99):10.3f}"
            f"{statistics.fmean(samples):10.3f}"
        )
    print(
        f"ratio compose/baseline: p50 {pct(composed, 0.5) / pct(validated, 0.5):.1f}x, "
        f"p99 {pct(composed, 0.99) / pct(validated, 0.99):.1f}x"
    )
    ok = pct(composed, 0.5) < 10 and pct(composed, 0.99) < 50
    print(f"target p50 < 10 ms and p99 < 50 ms: {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
