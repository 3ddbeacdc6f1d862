"""Store soak: random store actions and kill -9s against a loopback hub, then what the cache holds after each restart.

Run: ``python bench/bench_store_soak.py [--seconds 60] [--seed 18] [--size-mb 8]`` (at most 300 s). One model
with two revisions on a loopback hub (weights throttled to 40 MB/s); random actions — download, ensure, repair of a
weight flipped on purpose (found by its full check), update, rollback, clean-up of the old revision or of the whole
model — each in a forked child (``components.chaos.store_kills.KillRunner``), killed with SIGKILL at a random point
of its expected duration with probability 0.6. After every kill the store restarts (a fresh ``ModelStore``) and the
cache is audited.

Prints: actions, kills, corrupt files found after restart (target 0: revisions reported verified that fail a full
check, blobs not hashing to their name, links to nothing, refs at a missing snapshot), bytes the hub sent vs bytes
that had to be fetched (each blob counted each time it had to appear: first download, after a clean-up, a repair;
plus the partial downloads a clean-up was asked to delete; target <= 1.1x), stale locks left (target 0), and the
dead owners' locks taken over on the way.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components.chaos.loopback_hub import Fault, HubServer
from components.chaos.store_kills import KillRunner, audit
from components.store.cache import HubCache

REPO = "bench/soak-model"
ACTIONS = ("download", "ensure", "repair", "update", "rollback", "cleanup_old", "cleanup_all")
KILL_SHARE = 0.6


def write_model(folder: Path, size: int, seed: int) -> None:
    """A diffusers-shaped folder: two safetensors files (3/4 and 1/4 of ``size``) and small configs."""
    rng = random.Random(seed)
    for part, share in (("transformer", 0.75), ("vae", 0.25)):
        (folder / part).mkdir(parents=True, exist_ok=True)
        n = int(size * share)
        header = json.dumps({"w": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}}).encode()
        data = rng.randbytes(n)
        (folder / part / "diffusion_pytorch_model.safetensors").write_bytes(
            struct.pack("<Q", len(header)) + header + data
        )
        (folder / part / "config.json").write_text(json.dumps({"seed": seed}))
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline", "seed": seed}))


def present_blobs(cache: HubCache) -> dict[str, tuple[int, int]]:
    """Blobs under their final name: name -> (inode, size); a new inode is a blob that had to be fetched."""
    blobs = cache.repo_dir(REPO) / "blobs"
    found = {}
    for path in blobs.iterdir() if blobs.is_dir() else ():
        if not path.name.startswith(".") and not path.name.endswith(".incomplete"):
            st = path.stat()
            found[path.name] = (st.st_ino, st.st_size)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to soak (at most 300)")
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--size-mb", type=float, default=8.0, help="size of each revision's weights")
    args = parser.parse_args()
    if not 0 < args.seconds <= 300:
        parser.error(f"`--seconds` must be in (0, 300] (got {args.seconds})")
    rng = random.Random(args.seed)
    scratch = Path(tempfile.mkdtemp(prefix="kintsugi-soak-"))
    write_model(scratch / "v1", int(args.size_mb * 2**20), 1)
    write_model(scratch / "v2", int(args.size_mb * 2**20), 2)
    cache = HubCache(scratch / "cache", scratch / "state")
    with HubServer() as hub, KillRunner() as runner:
        old = hub.add_revision(REPO, scratch / "v1")
        new = hub.add_revision(REPO, scratch / "v2", ref=None)
        hub.inject(Fault(kind="throttle", path=".safetensors", times=None, bytes_per_s=40_000_000))

        def job(action: str, **extra: object) -> dict[str, object]:
            base = {"cache": str(scratch / "cache"), "state": str(scratch / "state"), "endpoint": hub.url}
            return {**base, "repo": REPO, "action": action, **extra}

        durations = dict.fromkeys(ACTIONS, 0.5)
        seen = present_blobs(cache)
        needed = discarded = 0
        actions = kills = corrupt = stale_owners = failed = 0
        damaged: set[str] = set()
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline:
            name = rng.choice(ACTIONS)
            if name == "update":  # the hub moves main on to the other revision; the store follows it
                hub.repos[REPO].refs["main"] = new if cache.resolve(REPO, "main") == old else old
            if name == "repair":
                current = present_blobs(cache)
                weights = [b for b in current if len(b) == 64]
                if not weights:
                    continue
                blob = cache.blob_path(REPO, rng.choice(weights))
                data = bytearray(blob.read_bytes())
                data[rng.randrange(len(data))] ^= 0xFF
                blob.write_bytes(bytes(data))
                damaged.add(blob.name)
                seen[blob.name] = (-1, 0)  # damaged: a good copy has to be fetched
            spec = {
                "download": job("download"),
                "ensure": job("ensure"),
                "repair": job("repair"),  # the full check finds the flipped byte, the file is fetched again
                "update": job("update"),
                "rollback": job("rollback"),
                "cleanup_old": job("cleanup", bytes=1),
                "cleanup_all": job("cleanup"),
            }[name]
            if name.startswith("cleanup"):  # partial downloads a clean-up deletes were asked to go: not waste
                partial_before = sum(cache.partial_bytes(REPO).values())
            kill_after = rng.uniform(0.0, durations[name]) if rng.random() < KILL_SHARE else None
            outcome = runner.run(spec, kill_after=kill_after)
            actions += 1
            if outcome.killed:
                kills += 1
                restart = runner.run(job("open"))  # the app starts again: what the dead one left is settled
                failed += restart.returncode != 0
            else:
                durations[name] = max(durations[name], outcome.seconds * 1.1)
                failed += outcome.returncode != 0 and name in ("download", "ensure", "update")
            if name.startswith("cleanup"):
                discarded += max(0, partial_before - sum(cache.partial_bytes(REPO).values()))
            report = audit(scratch / "cache", scratch / "state", {REPO: {old, new}})
            damaged &= set(present_blobs(cache))
            bad_blobs = [b for b in report.corrupt_blobs if b.rsplit("/", 1)[-1] not in damaged]
            corrupt += len(bad_blobs) + report.corrupt_files - len(report.corrupt_blobs)
            corrupt += len(report.stuck_locks)
            stale_owners += len(report.stale_owners)
            now = present_blobs(cache)
            for blob, (inode, size) in now.items():
                if seen.get(blob, (None, 0))[0] != inode and blob not in damaged:
                    needed += size
            seen = now
        if damaged:
            runner.run(job("repair"))
        final = runner.run(job("ensure"))
        report = audit(scratch / "cache", scratch / "state", {REPO: {old, new}})
        for blob, (inode, size) in present_blobs(cache).items():
            if seen.get(blob, (None, 0))[0] != inode:
                needed += size
        served = sum(r.body_bytes for r in hub.fetched() if r.filename)
    print(f"soak: {args.seconds:.0f} s, seed {args.seed}, {args.size_mb:g} MB per revision, pid {os.getpid()}")
    print(f"actions                          {actions}")
    print(f"kills (SIGKILL mid-action)       {kills}")
    print(f"corrupt files after restart      {corrupt}  (target 0)")
    print(f"final ensure + audit             {'ok' if final.returncode == 0 and report.ok else report}")
    print(
        f"bytes sent / needed              {served / max(needed + discarded, 1):.3f}x  ({served} / {needed} fetched "
        f"+ {discarded} partial bytes clean-ups deleted; target <= 1.1x)"
    )
    print(f"stale locks left                 {len(report.stuck_locks)}  (target 0)")
    print(f"dead owners' locks taken over    {stale_owners}")
    print(f"unexpected action failures       {failed}")


if __name__ == "__main__":
    main()
