"""Turn an NVML probe capture (shared fixtures format) into a GPU recording (docs/design.md).

Usage: python scripts/probe_to_recording.py PROBE.json OUT.jsonl.gz [--t0 UNIX_TIME]

Each probe row becomes one `nvml` entry; fields the probe could not read are omitted.
"""

from __future__ import annotations

import argparse
import gzip
import json


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("probe")
    ap.add_argument("out")
    ap.add_argument("--t0", type=float, default=1795772730.0)
    args = ap.parse_args()
    with open(args.probe) as f:
        probe = json.load(f)
    static = probe["static"]

    def val(d: dict, key: str):
        item = d.get(key)
        return (
            None
            if item is None or item.get("err") or item.get("error")
            else item.get("v", item.get("value"))
        )

    limit = val(static, "enforced_power_limit_mw")
    with gzip.open(args.out, "wt") as out:
        header = {"recording": 1, "source": f"converted from {args.probe.split('/')[-1]}"}
        out.write(json.dumps(header) + "\n")
        for row in probe["series"]:
            r = row["readings"]
            g: dict = {"index": 0, "uuid": val(static, "uuid"), "name": val(static, "name")}
            util = val(r, "utilization")
            if util is not None:
                g["util_gpu"], g["util_mem"] = util["gpu"], util["memory"]
            mem = val(r, "memory_info")
            if mem is not None:
                g["mem_used_bytes"], g["mem_total_bytes"] = mem["used"], mem["total"]
            for src, dst in (
                ("power_mw", "power_mw"),
                ("temperature_c", "temperature_c"),
                ("sm_clock_mhz", "sm_clock_mhz"),
                ("total_energy_mj", "energy_mj"),
            ):
                v = val(r, src)
                if v is not None:
                    g[dst] = v
            if limit is not None:
                g["power_limit_mw"] = limit
            gpm = row.get("gpm") or {}
            if gpm.get("NVML_GPM_METRIC_DRAM_BW_UTIL") is not None:
                g["gpm"] = {"dram_bw_util": gpm["NVML_GPM_METRIC_DRAM_BW_UTIL"]}
            entry = {"t": round(args.t0 + row["t"], 3), "source": "nvml", "gpus": [g]}
            out.write(json.dumps(entry) + "\n")


if __name__ == "__main__":
    main()
