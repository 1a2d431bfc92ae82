"""Personal data in the ledger: mask it in what the UI shows, blank it when it is no longer
needed, erase one customer's e-mail on request (README, "Personal data").

Pure functions over strings and JSON-shaped values: no Dagster, DuckDB or HTTP here, so
the assets, the ledger (``ledger/personal_data.py``) and ``privacy.py`` can all use them.

* :func:`mask_emails` — ``jane.doe@example.com`` → ``j***@example.com`` in any text.
* :func:`blank_order` — a raw Shopware order with every field that is not on an allow-list
  (ids, order number, dates, amounts, taxes, currency, country codes, product lines) set to
  ``null``: names, e-mail, addresses, phone numbers, the customer's IP, company, VAT ids,
  comments and custom fields included. Fail closed: a field Shopware adds later is blanked too.
* :func:`blank_sales_order` — an ERP sales order with every text that holds one of the
  customer's values (or any e-mail address) set to ``null``; ids, amounts and ``YourRef`` kept.
* :func:`erase_email` — one address replaced by ``[erased]`` in a text, matched
  case-insensitively and exactly (``jane@example.com`` is not part of
  ``mary.jane@example.com`` or ``jane@example.com.au``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

#: An e-mail address inside any text (generous: it is used to hide addresses, not to check them).
EMAIL_IN_TEXT = re.compile(r"\w[\w.!#$%&'*+-]*@([\w-]+(?:\.[\w-]+)+)")
#: What replaces an erased e-mail address, and a blanked personal value inside a text.
ERASED = "[erased]"
BLANKED = "***"


def mask_emails(text: str) -> str:
    """Every e-mail address in ``text`` masked to its first character and its domain:
    ``"mail jane.doe@example.com"`` → ``"mail j***@example.com"``. Idempotent."""
    return EMAIL_IN_TEXT.sub(lambda m: f"{m.group(0)[0]}***@{m.group(1)}", text)


def normalise_email(email: str) -> str:
    """How the ledger compares addresses: trimmed and lower-cased (as ``erp_accounts`` keys)."""
    return email.strip().lower()


def exact_email_pattern(email: str) -> re.Pattern[str]:
    """``email`` in a text, case-insensitively, and not as part of a longer address: no address
    character right before it, no further domain label or name character right after it."""
    return re.compile(
        r"(?<![\w.!#$%&*+-])" + re.escape(normalise_email(email)) + r"(?![\w-])(?!\.[\w-])",
        re.IGNORECASE,
    )


def erase_email(text: str, email: str | re.Pattern[str]) -> tuple[str, int]:
    """``text`` with every exact occurrence of ``email`` replaced by ``[erased]``, and how many."""
    pattern = email if isinstance(email, re.Pattern) else exact_email_pattern(email)
    return pattern.subn(ERASED, text)


# --- the raw shop order ----------------------------------------------------------------------

#: Keep the value (its texts with e-mail addresses masked).
_KEEP = True
_PRICE = _KEEP  # calculated prices and taxes: numbers only
_COUNTRY: dict[str, Any] = {"id": _KEEP, "iso": _KEEP, "iso3": _KEEP, "name": _KEEP}
_STATE: dict[str, Any] = {"id": _KEEP, "technicalName": _KEEP, "name": _KEEP}
#: An address keeps its ids and country; names, street, zip code, city, phone, company,
#: department, VAT id and whatever else it holds become null.
_ADDRESS: dict[str, Any] = {
    "id": _KEEP,
    "versionId": _KEEP,
    "orderId": _KEEP,
    "orderVersionId": _KEEP,
    "countryId": _KEEP,
    "countryStateId": _KEEP,
    "country": _COUNTRY,
    "countryState": {"id": _KEEP, "shortCode": _KEEP},
    "createdAt": _KEEP,
}
_CURRENCY: dict[str, Any] = {
    "id": _KEEP,
    "isoCode": _KEEP,
    "factor": _KEEP,
    "symbol": _KEEP,
    "shortName": _KEEP,
    "name": _KEEP,
    "itemRounding": _KEEP,
    "totalRounding": _KEEP,
}
#: A line item without personal data: what it is, how many, at what price. Its payload keeps
#: the product number and promotion figures only (options, custom fields, codes become null).
_LINE: dict[str, Any] = {
    "id": _KEEP,
    "versionId": _KEEP,
    "orderId": _KEEP,
    "orderVersionId": _KEEP,
    "identifier": _KEEP,
    "referencedId": _KEEP,
    "productId": _KEEP,
    "productVersionId": _KEEP,
    "promotionId": _KEEP,
    "parentId": _KEEP,
    "type": _KEEP,
    "label": _KEEP,
    "good": _KEEP,
    "removable": _KEEP,
    "stackable": _KEEP,
    "position": _KEEP,
    "quantity": _KEEP,
    "unitPrice": _KEEP,
    "totalPrice": _KEEP,
    "price": _PRICE,
    "priceDefinition": _PRICE,
    "states": _KEEP,
    "payload": {"productNumber": _KEEP, "discountType": _KEEP, "value": _KEEP},
    "createdAt": _KEEP,
}
_LINE["children"] = [_LINE]
_DELIVERY: dict[str, Any] = {
    "id": _KEEP,
    "versionId": _KEEP,
    "orderId": _KEEP,
    "orderVersionId": _KEEP,
    "shippingOrderAddressId": _KEEP,
    "shippingOrderAddressVersionId": _KEEP,
    "shippingOrderAddress": _ADDRESS,
    "shippingMethodId": _KEEP,
    "stateId": _KEEP,
    "stateMachineState": _STATE,
    "shippingDateEarliest": _KEEP,
    "shippingDateLatest": _KEEP,
    "shippingCosts": _PRICE,
    "createdAt": _KEEP,
}
#: The order's customer keeps only its ids: e-mail, names, company, customer number, title,
#: VAT ids and the IP address (``remoteAddress``) become null.
_CUSTOMER: dict[str, Any] = {
    "id": _KEEP,
    "versionId": _KEEP,
    "orderId": _KEEP,
    "orderVersionId": _KEEP,
    "customerId": _KEEP,
    "salutationId": _KEEP,
    "createdAt": _KEEP,
}
#: What the ledger keeps of an order once its personal data is blanked.
ORDER_ALLOW_LIST: dict[str, Any] = {
    "id": _KEEP,
    "versionId": _KEEP,
    "orderNumber": _KEEP,
    "autoIncrement": _KEEP,
    "billingAddressId": _KEEP,
    "billingAddressVersionId": _KEEP,
    "currencyId": _KEEP,
    "languageId": _KEEP,
    "salesChannelId": _KEEP,
    "stateId": _KEEP,
    "orderDateTime": _KEEP,
    "orderDate": _KEEP,
    "createdAt": _KEEP,
    "updatedAt": _KEEP,
    "currencyFactor": _KEEP,
    "price": _PRICE,
    "amountTotal": _KEEP,
    "amountNet": _KEEP,
    "positionPrice": _KEEP,
    "taxStatus": _KEEP,
    "shippingCosts": _PRICE,
    "shippingTotal": _KEEP,
    "itemRounding": _KEEP,
    "totalRounding": _KEEP,
    "taxCalculationType": _KEEP,
    "stateMachineState": _STATE,
    "currency": _CURRENCY,
    "orderCustomer": _CUSTOMER,
    "billingAddress": _ADDRESS,
    "deliveries": [_DELIVERY],
    "lineItems": [_LINE],
}

#: Keys whose (string) values are a person's own data, looked for in the order's other texts.
_PERSONAL_KEYS = frozenset(
    {
        "email",
        "firstName",
        "lastName",
        "company",
        "customerNumber",
        "street",
        "additionalAddressLine1",
        "additionalAddressLine2",
        "phoneNumber",
        "department",
        "vatId",
        "vatIds",
        "remoteAddress",
    }
)


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask_emails(value)
    if isinstance(value, list):
        return [_masked(v) for v in value]
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    return value


def _apply(value: Any, spec: Any) -> Any:
    if spec is _KEEP:
        return _masked(value)
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            return None
        return {key: _apply(v, spec[key]) if key in spec else None for key, v in value.items()}
    if isinstance(spec, list):
        if not isinstance(value, list):
            return None
        return [_apply(v, spec[0]) for v in value]
    return None


def blank_order(order: Any) -> Any:
    """A copy of a raw shop order holding only :data:`ORDER_ALLOW_LIST`: every other field is
    ``null`` (its key stays, so the blanking is visible). Not a dict: ``null``."""
    return _apply(order, ORDER_ALLOW_LIST)


def personal_values(order: Any) -> list[str]:
    """The texts that identify the order's customer (e-mail, names, company, customer number,
    street, phone, VAT ids, IP), wherever they sit in the order, longest first."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            first, last = value.get("firstName"), value.get("lastName")
            if isinstance(first, str) and isinstance(last, str):
                found.add(f"{first.strip()} {last.strip()}")
            for key, v in value.items():
                if key in _PERSONAL_KEYS:
                    for text in v if isinstance(v, list) else [v]:
                        if isinstance(text, str):
                            found.add(text.strip())
                else:
                    walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(order)
    return sorted((v for v in found if len(v) >= 2), key=lambda v: (-len(v), v))


def _values_pattern(values: Iterable[str]) -> re.Pattern[str] | None:
    values = [v for v in values if v]
    if not values:
        return None
    alternatives = "|".join(re.escape(v) for v in sorted(values, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def scrub_text(text: str | None, values: Iterable[str]) -> str | None:
    """``text`` with each of ``values`` replaced by ``***`` and e-mail addresses masked."""
    if text is None:
        return None
    pattern = _values_pattern(values)
    return mask_emails(pattern.sub(BLANKED, text) if pattern else text)


#: Sales order fields that are ids, dates, codes or amounts: kept as they are.
_ERP_KEPT = frozenset(
    {
        "OrderedBy",
        "YourRef",
        "OrderDate",
        "Currency",
        "Item",
        "Quantity",
        "NetPrice",
        "UnitPrice",
        "VATCode",
        "Discount",
        "AmountFC",
    }
)


def blank_sales_order(payload: Any, values: Iterable[str]) -> Any:
    """A copy of a mapped ERP sales order with every text that holds one of ``values`` (the
    customer's, from :func:`personal_values`) or any e-mail address set to ``null``: the
    description or extra fields a route fills from ``{customer_name}`` or ``{email}``. Ids
    (``OrderedBy``, items), ``YourRef`` (the exactly-once key), dates, codes and amounts stay."""
    pattern = _values_pattern(values)

    def personal(text: str) -> bool:
        return bool(EMAIL_IN_TEXT.search(text) or (pattern and pattern.search(text)))

    def walk(value: Any, key: str | None = None) -> Any:
        if key in _ERP_KEPT:
            return value
        if isinstance(value, dict):
            return {k: walk(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, str) and personal(value):
            return None
        return value

    return walk(payload)


def customer_email(order: Any) -> str | None:
    """The order's ``orderCustomer.email``, normalised (None when it has none)."""
    customer = order.get("orderCustomer") if isinstance(order, Mapping) else None
    email = customer.get("email") if isinstance(customer, Mapping) else None
    return normalise_email(email) if isinstance(email, str) and email.strip() else None


__all__ = [
    "BLANKED",
    "EMAIL_IN_TEXT",
    "ERASED",
    "ORDER_ALLOW_LIST",
    "blank_order",
    "blank_sales_order",
    "customer_email",
    "erase_email",
    "exact_email_pattern",
    "mask_emails",
    "normalise_email",
    "personal_values",
    "scrub_text",
]
