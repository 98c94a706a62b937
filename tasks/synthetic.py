"""A synthetic Burberry-like catalog, generated offline and deterministically from a seed.

Why: the real rows and images cannot be fetched in CI or offline, yet the whole pipeline (split,
prompt, training, scoring) must run on data with the real schema and a learnable image -> answer
mapping. Every visible attribute is drawn into the image: the silhouette gives category3, the fill
the colour, overlaid lines/dots the pattern, and a texture the material. The title is
"[pattern] material item"; several colour variants share one title (so the grouped split matters);
the price depends on category, material and pattern, rounded like real prices (1290.0, 450.0).

Only ``random.Random`` instances seeded from the seed are used, never the global RNG, so the
metadata file is byte-identical for the same seed on every machine.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

from harness.core.paths import cache_dir as default_cache_dir
from harness.core.store import write_atomic

SIZE = 128
METADATA = "metadata.jsonl"

# category3 -> (category2, allowed category1, item noun, base price USD, materials, shape)
CATEGORIES: dict[str, tuple[str, tuple[str, ...], str, int, tuple[str, ...], str]] = {
    "SCARVES": ("ACCESSORIES", ("WOMAN", "MAN", "KIDS"), "Scarf", 450, ("Cashmere", "Wool", "Silk"), "scarf"),
    "TRENCH COATS": (
        "OUTERWEAR",
        ("WOMAN", "MAN"),
        "Trench Coat",
        2290,
        ("Cotton Gabardine", "Wool", "Leather"),
        "coat",
    ),
    "QUILTED JACKETS": (
        "OUTERWEAR",
        ("WOMAN", "MAN", "KIDS"),
        "Quilted Jacket",
        1290,
        ("Nylon", "Cotton"),
        "jacket",
    ),
    "PONCHOS & CAPES": ("OUTERWEAR", ("WOMAN",), "Cape", 1890, ("Wool", "Cashmere"), "cape"),
    "BOOTS": ("SHOES", ("WOMAN", "MAN"), "Boots", 990, ("Leather", "Suede", "Rubber"), "boot"),
    "SNEAKERS": (
        "SHOES",
        ("WOMAN", "MAN", "KIDS"),
        "Sneakers",
        690,
        ("Leather", "Canvas", "Suede"),
        "sneaker",
    ),
    "TOTES": ("BAGS", ("WOMAN", "MAN"), "Tote", 1890, ("Leather", "Canvas"), "tote"),
    "CROSSBODY BAGS": (
        "BAGS",
        ("WOMAN", "MAN"),
        "Crossbody Bag",
        1590,
        ("Leather", "Canvas", "Nylon"),
        "crossbody",
    ),
    "WALLETS & CARD CASES": (
        "ACCESSORIES",
        ("WOMAN", "MAN"),
        "Card Case",
        390,
        ("Leather", "Canvas"),
        "card",
    ),
    "CAPS & HATS": (
        "ACCESSORIES",
        ("WOMAN", "MAN", "KIDS"),
        "Bucket Hat",
        490,
        ("Cotton", "Nylon", "Wool"),
        "hat",
    ),
    "POLOS & T-SHIRTS": ("CLOTHING", ("WOMAN", "MAN", "KIDS"), "T-shirt", 490, ("Cotton", "Silk"), "tshirt"),
    "SKIRTS & TROUSERS": (
        "CLOTHING",
        ("WOMAN", "MAN", "KIDS"),
        "Trousers",
        890,
        ("Wool", "Cotton"),
        "trousers",
    ),
    "DRESSES": ("CLOTHING", ("WOMAN", "KIDS"), "Dress", 1690, ("Silk", "Wool", "Cotton"), "dress"),
}
MATERIAL_FACTOR = {
    "Cashmere": 1.6, "Silk": 1.3, "Leather": 1.4, "Suede": 1.25, "Wool": 1.1, "Cotton Gabardine": 1.0,
    "Cotton": 0.9, "Canvas": 0.85, "Nylon": 0.9, "Rubber": 0.7,
}  # fmt: skip
PATTERNS = {"Vintage Check": 1.15, "Icon Stripe": 1.05, "Monogram": 1.1, "": 1.0}  # "" = plain
COLOURS = {
    "Archive Beige": (214, 190, 150), "Black": (30, 30, 30), "Navy": (35, 45, 90), "Camel": (176, 130, 80),
    "Bright Red": (190, 30, 40), "Olive": (100, 110, 60), "Grey": (140, 140, 140), "Ivory": (240, 235, 220),
}  # fmt: skip

# Shapes in a 0-100 unit box: ("poly", points) | ("ellipse", box) | ("line", points, width).
SHAPES: dict[str, list[tuple]] = {
    "scarf": [("poly", [(40, 5), (60, 5), (62, 85), (38, 85)]), ("line", [(40, 85), (40, 95), (62, 95)], 3)],
    "coat": [("poly", [(30, 8), (70, 8), (84, 30), (78, 95), (22, 95), (16, 30)]),
             ("poly", [(30, 8), (16, 30), (8, 70), (16, 72), (24, 36)]),
             ("poly", [(70, 8), (84, 30), (92, 70), (84, 72), (76, 36)])],
    "jacket": [("poly", [(28, 15), (72, 15), (80, 30), (80, 70), (20, 70), (20, 30)]),
               ("poly", [(28, 15), (20, 30), (8, 62), (16, 65), (24, 40)]),
               ("poly", [(72, 15), (80, 30), (92, 62), (84, 65), (76, 40)])],
    "cape": [("ellipse", (38, 5, 62, 28)), ("poly", [(50, 15), (92, 90), (8, 90)])],
    "boot": [("poly", [(30, 8), (55, 8), (55, 62), (90, 72), (92, 90), (30, 90)])],
    "sneaker": [("poly", [(10, 50), (45, 42), (70, 55), (92, 62), (94, 78), (10, 78)]),
                ("poly", [(8, 78), (96, 78), (96, 86), (8, 86)])],
    "tote": [("poly", [(18, 38), (82, 38), (88, 92), (12, 92)]), ("line", [(32, 38), (36, 12), (64, 12), (68, 38)], 5)],
    "crossbody": [("poly", [(35, 55), (80, 55), (80, 85), (35, 85)]), ("line", [(38, 55), (15, 8), (77, 55)], 3)],
    "card": [("poly", [(25, 35), (75, 35), (75, 65), (25, 65)])],
    "hat": [("poly", [(32, 25), (68, 25), (74, 58), (26, 58)]), ("ellipse", (10, 52, 90, 70))],
    "tshirt": [("poly", [(35, 12), (65, 12), (92, 28), (84, 42), (72, 36), (72, 90), (28, 90), (28, 36),
                         (16, 42), (8, 28)])],
    "trousers": [("poly", [(28, 8), (72, 8), (78, 95), (56, 95), (50, 35), (44, 95), (22, 95)])],
    "dress": [("poly", [(38, 5), (62, 5), (60, 38), (86, 95), (14, 95), (40, 38)])],
}  # fmt: skip


def generate_rows(seed: int = 0, n: int = 600) -> list[dict]:
    """The catalog's rows in the Burberry schema (plus image, colour, pattern, material)."""
    rng = random.Random(seed)
    designs: dict[str, dict] = {}  # title -> shared attributes of its colour variants
    rows: list[dict] = []
    while len(rows) < n:
        cat3 = rng.choice(sorted(CATEGORIES))
        cat2, cat1s, item, base, materials, _ = CATEGORIES[cat3]
        material, pattern = rng.choice(materials), rng.choice(sorted(PATTERNS))
        title = " ".join(part for part in (pattern, material, item) if part)
        design = designs.get(title)
        if design is None:
            raw = base * MATERIAL_FACTOR[material] * PATTERNS[pattern] * rng.uniform(0.85, 1.2)
            price = float(round(raw, -1)) if raw < 500 else float(round(raw, -2) - 10)
            design = designs[title] = {"cat1": rng.choice(cat1s), "price": price, "colours": []}
        free = [c for c in sorted(COLOURS) if c not in design["colours"]]
        for colour in rng.sample(free, min(len(free), rng.choice((1, 1, 2, 2, 3)))):
            design["colours"].append(colour)
            code = 80_000_000 + len(rows)
            price = design["price"]
            rows.append({
                "website_name": "SYNTHETIC", "competence_date": "2023-11-17", "country_code": "USA",
                "currency_code": "USD", "brand": "BURBERRY", "category1_code": design["cat1"],
                "category2_code": cat2, "category3_code": cat3, "product_code": code, "title": title,
                "itemurl": "", "imageurl": "", "full_price": price, "price": price,
                "full_price_eur": round(price * 0.92, 2), "price_eur": round(price * 0.92, 2),
                "flg_discount": 0, "image": f"images/{code}.png", "colour": colour,
                "pattern": pattern or "Plain", "material": material,
            })  # fmt: skip
    return rows[:n]


def _fabric(colour: tuple[int, int, int], pattern: str, material: str, rng: random.Random) -> Image.Image:
    """A swatch of the product's fabric: colour, then material texture, then pattern on top."""
    img = Image.new("RGB", (SIZE, SIZE), colour)
    draw = ImageDraw.Draw(img)
    dark = tuple(max(0, c - 45) for c in colour)
    light = tuple(min(255, c + 60) for c in colour)
    if material in ("Cashmere", "Suede"):  # soft speckle
        for _ in range(900 if material == "Cashmere" else 400):
            x, y = rng.randrange(SIZE), rng.randrange(SIZE)
            draw.point((x, y), fill=light if rng.random() < 0.5 else dark)
    elif material in ("Wool", "Nylon"):  # knit ridges / quilting channels
        for y in range(0, SIZE, 3 if material == "Wool" else 10):
            draw.line([(0, y), (SIZE, y)], fill=dark, width=1)
    elif material in ("Leather", "Rubber", "Silk"):  # gloss / sheen
        for i in range(0, 2 * SIZE, 24 if material == "Silk" else 64):
            draw.line([(i, 0), (i - SIZE, SIZE)], fill=light, width=6 if material == "Leather" else 3)
    elif material in ("Canvas", "Cotton Gabardine"):  # weave / twill
        step = 4 if material == "Canvas" else 5
        for i in range(0, 2 * SIZE, step):
            draw.line([(i, 0), (i - SIZE, SIZE)], fill=dark, width=1)
            if material == "Canvas":
                draw.line([(i - SIZE, 0), (i, SIZE)], fill=dark, width=1)
    if pattern == "Vintage Check":
        for i in range(4, SIZE, 16):
            for fill, width, off in (((20, 20, 20), 3, 0), ((240, 240, 240), 1, 6), ((180, 30, 40), 1, 9)):
                draw.line([(i + off, 0), (i + off, SIZE)], fill=fill, width=width)
                draw.line([(0, i + off), (SIZE, i + off)], fill=fill, width=width)
    elif pattern == "Icon Stripe":
        stripes = ((230, 225, 210), (120, 30, 40), (40, 40, 90), (200, 160, 60))
        for k, i in enumerate(range(0, SIZE, 6)):
            fill = stripes[k % len(stripes)]
            draw.line([(i, 0), (i, SIZE)], fill=fill, width=3)
    elif pattern == "Monogram":
        for y in range(3, SIZE, 10):
            for x in range(3 + (y // 10 % 2) * 5, SIZE, 10):
                draw.ellipse((x, y, x + 4, y + 4), fill=(200, 175, 110))
    return img


def render(row: dict, seed: int) -> Image.Image:
    """The product shot: the category's silhouette cut out of the fabric, jittered a little per product."""
    rng = random.Random(f"{seed}:{row['product_code']}")
    scale = rng.uniform(0.9, 1.05) * SIZE / 100
    dx, dy = rng.uniform(-4, 4) + SIZE * (1 - scale * 100 / SIZE) / 2, rng.uniform(-4, 4)

    def pt(x: float, y: float) -> tuple[float, float]:
        return (dx + x * scale, dy + y * scale)

    mask = Image.new("L", (SIZE, SIZE), 0)
    draw = ImageDraw.Draw(mask)
    for shape in SHAPES[CATEGORIES[row["category3_code"]][5]]:
        if shape[0] == "poly":
            draw.polygon([pt(*p) for p in shape[1]], fill=255)
        elif shape[0] == "ellipse":
            x0, y0, x1, y1 = shape[1]
            draw.ellipse((*pt(x0, y0), *pt(x1, y1)), fill=255)
        else:
            draw.line([pt(*p) for p in shape[1]], fill=255, width=max(1, round(shape[2] * scale)))
    pattern = "" if row["pattern"] == "Plain" else row["pattern"]
    fabric = _fabric(COLOURS[row["colour"]], pattern, row["material"], rng)
    image = Image.new("RGB", (SIZE, SIZE), (242, 240, 236))
    image.paste(fabric, (0, 0), mask)
    return image


def build_catalog(seed: int = 0, n: int = 600, cache_dir: Path | None = None) -> Path:
    """Write (once) ``<cache>/synthetic/seed<seed>-n<n>/`` with metadata.jsonl and images/; return the metadata path.

    The metadata file is written last and atomically, so its presence means the catalog is complete.
    """
    root = Path(cache_dir or default_cache_dir()) / "synthetic" / f"seed{seed}-n{n}"
    meta = root / METADATA
    if meta.exists():
        return meta
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = generate_rows(seed, n)
    for row in rows:
        target = root / row["image"]
        if not target.exists():
            buf = io.BytesIO()
            render(row, seed).save(buf, format="PNG")
            write_atomic(target, buf.getvalue())
    write_atomic(meta, "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))
    return meta
