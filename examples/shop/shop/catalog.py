"""The shop's products (prices in cents, EUR)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Product:
    """One product on the shelf."""

    id: str
    name: str
    price: int  # minor units (cents)
    blurb: str


PRODUCTS: tuple[Product, ...] = (
    Product(
        "sencha", "Sencha green tea, 100 g", 890, "Steamed Japanese green tea, grassy and bright."
    ),
    Product("assam", "Assam breakfast tea, 250 g", 1150, "Malty black tea for milk and mornings."),
    Product("teapot", "Cast-iron teapot, 0.8 l", 4500, "Keeps a pot hot for a long afternoon."),
    Product("cups", "Tea cups, set of 2", 2400, "Hand-glazed stoneware, dishwasher safe."),
    Product("honey", "Forest honey, 250 g", 650, "Dark, from the Black Forest."),
)
BY_ID = {p.id: p for p in PRODUCTS}
CURRENCY = "EUR"
MAX_QUANTITY = 20


def money(cents: int) -> str:
    """``1234`` -> ``"12.34 EUR"``."""
    return f"{cents // 100}.{cents % 100:02d} {CURRENCY}"
