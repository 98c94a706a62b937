"""The DBQ family: ~20 catalogs on the Hugging Face hub with Burberry's schema, one per brand and country.

``dbq:<Brand>.<Country>`` (e.g. ``dbq:Bottega.Veneta.United.States``, ``dbq:Gucci.Canada``) is the
burberry config with the dataset id, the currency and the revision filled in. Brands and countries
both contain dots, so the country is the longest known country name at the end.
"""

from __future__ import annotations

from pathlib import Path

from harness.core.errors import HarnessError
from tasks.config import TaskConfig, load_config

PREFIX = "dbq:"
BASE_CONFIG = Path(__file__).parent / "configs" / "burberry.toml"
# Prices are in the country's currency (the datasets' `currency_code`).
CURRENCIES = {
    "United.States": "USD", "Canada": "CAD", "Mexico": "MXN", "Brazil": "BRL",
    "United.Kingdom": "GBP", "France": "EUR", "Italy": "EUR", "Germany": "EUR", "Spain": "EUR",
    "Portugal": "EUR", "Netherlands": "EUR", "Belgium": "EUR", "Austria": "EUR", "Ireland": "EUR",
    "Finland": "EUR", "Greece": "EUR", "Luxembourg": "EUR", "Sweden": "SEK", "Denmark": "DKK",
    "Norway": "NOK", "Switzerland": "CHF", "Poland": "PLN", "Czech.Republic": "CZK", "Hungary": "HUF",
    "Romania": "RON", "Russia": "RUB", "Turkey": "TRY", "Japan": "JPY", "China": "CNY",
    "Hong.Kong": "HKD", "Taiwan": "TWD", "South.Korea": "KRW", "Singapore": "SGD", "Malaysia": "MYR",
    "Thailand": "THB", "India": "INR", "Australia": "AUD", "New.Zealand": "NZD",
    "United.Arab.Emirates": "AED", "Saudi.Arabia": "SAR", "Qatar": "QAR", "Kuwait": "KWD",
    "Bahrain": "BHD",
}  # fmt: skip
# Commits known to be the datasets' content (pinned); any other catalog is resolved when loaded
# and its commit recorded in the run's data info.
KNOWN_REVISIONS = {
    "DBQ/Burberry.Product.prices.United.States": "2d90840b90ebbbf6b4a1ba8b72252fd5bbe51230",
}


def split_name(spec: str) -> tuple[str, str]:
    """'Louis.Vuitton.United.Kingdom' -> ('Louis.Vuitton', 'United.Kingdom')."""
    for country in sorted(CURRENCIES, key=len, reverse=True):
        if spec.endswith("." + country) and len(spec) > len(country) + 1:
            return spec[: -len(country) - 1], country
    raise HarnessError(
        f"task {PREFIX}{spec}: no known country at its end; write {PREFIX}<Brand>.<Country>, "
        f"e.g. {PREFIX}Gucci.Canada (countries: {', '.join(sorted(CURRENCIES))})"
    )


def dbq_config(name: str) -> TaskConfig:
    """The task config of ``dbq:<Brand>.<Country>``, derived from the burberry config."""
    brand, country = split_name(name.removeprefix(PREFIX))
    base = load_config(BASE_CONFIG)
    hub = f"DBQ/{brand}.Product.prices.{country}"
    data = base.data.model_copy(update={"hub": hub, "revision": KNOWN_REVISIONS.get(hub)})
    fields = [
        f.model_copy(update={"currency": CURRENCIES[country]}) if f.currency else f for f in base.fields
    ]
    shown = f"{brand.replace('.', ' ')} ({country.replace('.', ' ')})"
    return base.model_copy(
        update={
            "name": f"{PREFIX}{brand}.{country}",
            "description": f"Product name, category and full price from a {shown} catalog image ({hub}).",
            "data": data,
            "fields": fields,
        }
    )
