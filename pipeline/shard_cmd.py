"""`animatic shard`: pack a dataset into tar shards for training on large corpora (keyframe.shards).

Any source training reads (an `animatic dataset` folder, a JSONL / CSV manifest, a folder of
captioned media) becomes DIR/shard-NNNNNN.tar + .jsonl index files and DIR/shards.json; train
with `--data.data DIR`. Interrupted runs resume: a rerun with the same source and --per-shard
keeps the shards already written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from keyframe.errors import UserError

MAX_PER_SHARD = 1_000_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE", help="dataset folder or manifest to pack")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (new or empty)")
    parser.add_argument(
        "--per-shard",
        type=int,
        default=1000,
        metavar="N",
        help="samples per shard (1000; aim for shards of a few hundred MB)",
    )


def run(args: argparse.Namespace) -> int:
    from keyframe.latents import records_fingerprint
    from keyframe.records import load_records, with_video_info
    from keyframe.shards import is_sharded, write_shards

    if not 1 <= args.per_shard <= MAX_PER_SHARD:
        raise UserError(
            f"--per-shard {args.per_shard}: expected an integer from 1 to {MAX_PER_SHARD}"
        )
    if is_sharded(args.source):
        raise UserError(f"{args.source}: already sharded")
    source = Path(args.source).expanduser().resolve()
    records = load_records(source)
    with tqdm(total=len(records), desc="probing", unit="file", file=sys.stderr) as bar:
        records = [_probed(r, with_video_info, bar) for r in records]
    params = {
        "source": str(source),
        "per_shard": args.per_shard,
        "records": records_fingerprint(records),
    }
    with tqdm(total=len(records), desc="packing", unit="sample", file=sys.stderr) as bar:
        try:
            info = write_shards(records, args.out, args.per_shard, params, bar.update)
        except OSError as err:
            raise UserError(f"--out {args.out}: write failed ({err.strerror or err})") from None
    print(f"shard: {args.out} ({len(records)} samples in {len(info['shards'])} shards)")
    return 0


def _probed(record: dict, with_video_info, bar) -> dict:
    """A video record with its frame count and rate (read once here, never at training start)."""
    bar.update(1)
    return with_video_info(record) if record["kind"] == "video" else record
