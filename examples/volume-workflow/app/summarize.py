"""Summarize sales: read every CSV file of the input directory, write per-region totals.

An ordinary Python program: it knows nothing about Citadel. Run by Citadel, its input and output
directories are encrypted volumes mounted at /data/in and /data/out, so the host stores the data
but can neither read it, change it, nor hand the program an older copy.

usage: python summarize.py [INPUT_DIR [OUTPUT_DIR]]    (default: /data/in /data/out)
(it runs unsealed on plain directories too: python app/summarize.py input results)
"""

from __future__ import annotations

import csv
import os
import sys
from collections import defaultdict
from typing import Dict, List


def summarize(input_dir: str, output_dir: str) -> Dict[str, List[float]]:
    totals: Dict[str, List[float]] = defaultdict(lambda: [0, 0.0])  # region -> [units, revenue]
    rows = 0
    for name in sorted(os.listdir(input_dir)):
        if not name.endswith(".csv"):
            continue
        with open(os.path.join(input_dir, name), newline="") as fh:
            for row in csv.DictReader(fh):
                units, price = int(row["units"]), float(row["unit_price"])
                totals[row["region"]][0] += units
                totals[row["region"]][1] += units * price
                rows += 1
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "summary.csv"), "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["region", "units", "revenue"])
        for region in sorted(totals):
            units, revenue = totals[region]
            writer.writerow([region, int(units), f"{revenue:.2f}"])
        writer.writerow(["TOTAL", int(sum(t[0] for t in totals.values())),
                         f"{sum(t[1] for t in totals.values()):.2f}"])
    print(f"summarized {rows} rows from {input_dir} into {output_dir}/summary.csv")
    return dict(totals)


if __name__ == "__main__":
    args = sys.argv[1:] + ["/data/in", "/data/out"][len(sys.argv[1:]):]
    summarize(args[0], args[1])
