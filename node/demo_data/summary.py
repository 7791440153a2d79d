"""Sample algorithm: per-city averages of the weather dataset. Sees only /data; no network."""

import csv
import json
import os
from collections import defaultdict

dids = json.loads(os.environ["DIDS"])
totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
for did in dids:
    with open(f"/data/inputs/{did}/0", newline="") as handle:
        for row in csv.DictReader(handle):
            total = totals[row["city"]]
            total[0] += float(row["temp_c"])
            total[1] += float(row["rain_mm"])
            total[2] += 1
summary = {
    city: {"mean_temp_c": round(t / n, 2), "total_rain_mm": round(r, 1), "days": n}
    for city, (t, r, n) in sorted(totals.items())
}
print(f"summarised {sum(v['days'] for v in summary.values())} rows of {len(summary)} cities")  # noqa: T201 (the algorithm log)
with open("/data/outputs/summary.json", "w") as out:
    json.dump(summary, out, indent=2)
