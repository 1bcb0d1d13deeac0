"""The paper's Tables 1–3, verbatim, for printing next to our numbers.

Columns: paired test on VITON-HD (SSIM, LPIPS, DISTS, FID, CLIP-FID, KID×1e3), then unpaired test on
StreetTryOn (FID, CLIP-FID, KID×1e3).
"""

from __future__ import annotations

PAIRED_COLUMNS = ("ssim", "lpips", "dists", "fid", "clip_fid", "kid_x1e3")
UNPAIRED_COLUMNS = ("fid", "clip_fid", "kid_x1e3")

# name -> (caption, [(row name, 6 paired values, 3 unpaired values)])
PAPER_TABLES: dict[str, tuple[str, list[tuple[str, tuple[float, ...], tuple[float, ...]]]]] = {
    "table1": (
        "Table 1 (paper): comparison with baselines",
        [
            ("CFLD", (0.7489, 0.4320, 0.2979, 46.2532, 10.3878, 33.8882), (62.1068, 12.8040, 35.7497)),
            ("OOTD", (0.7219, 0.4424, 0.2984, 66.4205, 10.0482, 52.3561), (113.5400, 16.4324, 89.4453)),
            ("IDM", (0.7402, 0.4374, 0.2939, 63.0603, 11.1035, 50.9523), (103.1404, 16.3456, 76.8308)),
            ("TryOffDiff", (0.7576, 0.4288, 0.2680, 28.8638, 14.7685, 16.4532), (39.8455, 19.7795, 20.5915)),
            ("IGR (paper)", (0.7895, 0.2946, 0.2045, 13.1425, 5.0746, 2.9724), (31.0537, 10.0137, 8.7535)),
        ],
    ),
    "table2": (
        "Table 2 (paper): ablations of structure and training strategy",
        [
            ("w/o GarmNet", (0.7931, 0.3048, 0.2192, 15.7038, 5.6490, 4.4113), (44.4640, 12.1343, 18.4922)),
            ("w/o HQFT", (0.7984, 0.2988, 0.2054, 13.6753, 5.9490, 3.5486), (41.0889, 11.1313, 15.9371)),
            ("IGR (paper)", (0.7895, 0.2946, 0.2045, 13.1425, 5.0746, 2.9724), (31.0537, 10.0137, 8.7535)),
        ],
    ),
    "table3": (
        "Table 3 (paper): guidance scale",
        [
            ("s = 1.0", (0.7940, 0.2957, 0.2110, 15.8122, 5.5150, 4.7267), (31.8787, 9.6373, 9.5388)),
            ("s = 1.5", (0.7895, 0.2946, 0.2045, 13.1425, 5.0746, 2.9724), (31.0537, 10.0137, 8.7535)),
            ("s = 2.0", (0.7781, 0.2961, 0.2043, 12.2856, 5.0132, 2.4130), (30.8504, 10.3480, 8.8750)),
            ("s = 2.5", (0.7651, 0.2979, 0.2059, 12.0341, 5.1168, 2.2296), (31.4109, 10.7149, 8.7850)),
        ],
    ),
}
