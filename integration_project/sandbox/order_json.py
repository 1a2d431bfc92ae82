"""The JSON shapes of a Shopware order and its associations, as the Admin API answers them.

Every field the OpenAPI ``Order`` schema and its associations require, camelCase. Ids of fixed
entities (countries, currencies, states, the live version) come from :func:`stable_id`; ids of
an order's own entities are drawn from the order's random stream, in the order the builders here
are called, so a seed always gives the same orders.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from integration_project.sandbox.order_prices import ROUNDING
from integration_project.sandbox.world import (
    COUNTRIES,
    CURRENCIES,
    PAYMENT_METHODS,
    SHIPPING_METHODS,
    Customer,
    Product,
    stable_id,
)
from integration_project.settings import EU_27
from integration_project.shopware.models import format_shop_datetime

_VERSION = stable_id("version", "live")  # Shopware's live version id
_EPOCH = "2026-01-05T09:00:00.000+00:00"  # createdAt of the shop's fixed entities


def hex_id(rng: random.Random) -> str:
    """A new entity id (32 hex digits), the next draw of ``rng``."""
    return f"{rng.getrandbits(128):032x}"


def country_json(iso: str) -> dict[str, Any]:
    name, iso3 = COUNTRIES[iso][:2] if iso in COUNTRIES else ("Unknown", "XXX")
    return {
        "id": stable_id("country", iso),
        "iso": iso,
        "iso3": iso3,
        "name": name,
        "isEu": iso in EU_27,
        "active": True,
        "shippingAvailable": True,
        "position": 1,
        "addressFormat": {},
        "translated": {"name": name},
        "createdAt": _EPOCH,
        "updatedAt": None,
    }


def currency_json(iso: str) -> dict[str, Any]:
    name, symbol, factor = CURRENCIES[iso]
    return {
        "id": stable_id("currency", iso),
        "isoCode": iso,
        "factor": factor,
        "symbol": symbol,
        "shortName": iso,
        "name": name,
        "position": 1,
        "isSystemDefault": iso == "EUR",
        "taxFreeFrom": 0.0,
        "itemRounding": dict(ROUNDING),
        "totalRounding": dict(ROUNDING),
        "translated": {"shortName": iso, "name": name},
        "createdAt": _EPOCH,
        "updatedAt": None,
    }


def shipping_method_json(zone: str) -> dict[str, Any]:
    """The shipping method of a zone, as the ``deliveries.shippingMethod`` association
    answers it (the fields of Shopware's ``ShippingMethodDefinition`` a client may read)."""
    name, technical = SHIPPING_METHODS[zone]
    return {
        "id": stable_id("shipping_method", zone),
        "name": name,
        "technicalName": technical,
        "active": True,
        "position": 1,
        "description": None,
        "trackingUrl": None,
        "deliveryTimeId": stable_id("delivery_time", "1-3 days"),
        "availabilityRuleId": stable_id("rule", "always"),
        "taxType": "auto",
        "taxId": None,
        "mediaId": None,
        "customFields": None,
        "translated": {"name": name, "description": None, "trackingUrl": None},
        "createdAt": _EPOCH,
        "updatedAt": None,
    }


def payment_method_json(technical: str) -> dict[str, Any]:
    """A payment method, as the ``transactions.paymentMethod`` association answers it."""
    name = dict((t, n) for n, t in PAYMENT_METHODS)[technical]
    return {
        "id": stable_id("payment_method", technical),
        "name": name,
        "distinguishableName": name,
        "technicalName": technical,
        "handlerIdentifier": "Shopware\\Core\\Checkout\\Payment\\Cart\\PaymentHandler\\"
        + technical.removeprefix("payment_").title().replace("payment", "Payment"),
        "active": True,
        "afterOrderEnabled": True,
        "position": 1,
        "description": None,
        "mediaId": None,
        "availabilityRuleId": None,
        "customFields": None,
        "translated": {"name": name, "distinguishableName": name, "description": None},
        "createdAt": _EPOCH,
        "updatedAt": None,
    }


def transaction_json(order_id: str, created: str, price: dict[str, Any]) -> dict[str, Any]:
    """The order's one payment transaction (state open). Its payment method follows from the
    order id, and its id is derived from it too, so adding it drew nothing from the order's
    random stream (earlier seeds give the same orders as before)."""
    technical = PAYMENT_METHODS[int(order_id[:8], 16) % len(PAYMENT_METHODS)][1]
    return {
        "id": stable_id("order_transaction", order_id),
        **_child(order_id, created),
        "paymentMethodId": stable_id("payment_method", technical),
        "paymentMethod": payment_method_json(technical),
        "amount": {
            "unitPrice": price["totalPrice"],
            "totalPrice": price["totalPrice"],
            "quantity": 1,
            "calculatedTaxes": price["calculatedTaxes"],
            "taxRules": price["taxRules"],
        },
        "stateId": stable_id("state", "order_transaction.state", "open"),
        "customFields": None,
    }


def _child(order_id: str, created: str) -> dict[str, Any]:
    """Fields every entity that belongs to an order carries."""
    return {
        "versionId": _VERSION,
        "orderId": order_id,
        "orderVersionId": _VERSION,
        "createdAt": created,
        "updatedAt": None,
    }


def _state_json(machine: str, technical: str, name: str) -> dict[str, Any]:
    return {
        "id": stable_id("state", machine, technical),
        "technicalName": technical,
        "name": name,
        "stateMachineId": stable_id("state_machine", machine),
        "translated": {"name": name},
        "createdAt": _EPOCH,
        "updatedAt": None,
    }


def address_json(
    rng: random.Random, order_id: str, created: str, iso: str, customer: Customer
) -> dict[str, Any]:
    """An order address in ``iso`` (the country's fixed street, a drawn house number)."""
    street, zipcode, city = COUNTRIES[iso][3] if iso in COUNTRIES else ("Nowhere 1", "0", "?")
    return {
        "id": hex_id(rng),
        **_child(order_id, created),
        "countryId": stable_id("country", iso),
        "country": country_json(iso),
        "firstName": customer.first_name,
        "lastName": customer.last_name,
        "company": customer.company,
        "street": f"{street} {rng.randint(1, 120)}",
        "zipcode": zipcode,
        "city": city,
        "phoneNumber": None,
        "salutationId": stable_id("salutation", "not_specified"),
    }


def product_line_json(
    rng: random.Random,
    order_id: str,
    created: str,
    index: int,
    product: Product,
    price: dict[str, Any],
) -> dict[str, Any]:
    product_id = stable_id("product", product.sku)
    return {
        "id": hex_id(rng),
        **_child(order_id, created),
        "identifier": product_id,
        "referencedId": product_id,
        "productId": product_id,
        "productVersionId": _VERSION,
        "type": "product",
        "label": product.name,
        "good": True,
        "removable": True,
        "stackable": True,
        "position": index + 1,
        "quantity": price["quantity"],
        "unitPrice": price["unitPrice"],
        "totalPrice": price["totalPrice"],
        "price": price,
        "priceDefinition": {
            "type": "quantity",
            "price": price["unitPrice"],
            "quantity": price["quantity"],
            "taxRules": [dict(rule) for rule in price["taxRules"]],
            "isCalculated": True,
        },
        "payload": {"productNumber": product.sku, "isNew": False, "options": []},
        "children": [],
        "states": [],
        "parentId": None,
        "coverId": None,
    }


def promotion_line_json(
    rng: random.Random, order_id: str, created: str, price: dict[str, Any], position: int
) -> dict[str, Any]:
    promotion_id = stable_id("promotion", "WINTER10")
    return {
        "id": hex_id(rng),
        **_child(order_id, created),
        "identifier": promotion_id,
        "referencedId": "WINTER10",
        "promotionId": promotion_id,
        "type": "promotion",
        "label": "Winterrabatt 10 %",
        "good": False,
        "removable": True,
        "stackable": False,
        "position": position,
        "quantity": 1,
        "unitPrice": price["unitPrice"],
        "totalPrice": price["totalPrice"],
        "price": price,
        "priceDefinition": {"type": "percentage", "percentage": -10.0, "filter": None},
        "payload": {"code": "WINTER10", "discountType": "percentage", "value": "10"},
        "children": [],
        "states": [],
    }


def order_customer_json(
    rng: random.Random,
    order_id: str,
    created: str,
    customer: Customer,
    email: str | None,
    vat_ids: list[str] | None,
) -> dict[str, Any]:
    return {
        "id": hex_id(rng),
        **_child(order_id, created),
        "customerId": stable_id("customer", customer.number),
        "email": email,
        "firstName": customer.first_name,
        "lastName": customer.last_name,
        "company": customer.company,
        "customerNumber": customer.number,
        "salutationId": stable_id("salutation", "not_specified"),
        "title": None,
        "vatIds": vat_ids,
    }


def delivery_json(
    rng: random.Random,
    order_id: str,
    created_at: datetime,
    address: dict[str, Any],
    zone: str,
    state: str,
    shipping_price: dict[str, Any],
) -> dict[str, Any]:
    """The order's one delivery, to ``address`` by the ``zone``'s method, in delivery ``state``."""
    return {
        "id": hex_id(rng),
        **_child(order_id, format_shop_datetime(created_at)),
        "shippingOrderAddressId": address["id"],
        "shippingOrderAddressVersionId": _VERSION,
        "shippingOrderAddress": address,
        "shippingMethodId": stable_id("shipping_method", zone),
        "shippingMethod": shipping_method_json(zone),
        "stateId": stable_id("state", "order_delivery.state", state),
        "shippingDateEarliest": format_shop_datetime(created_at + timedelta(days=1)),
        "shippingDateLatest": format_shop_datetime(created_at + timedelta(days=3)),
        "shippingCosts": shipping_price,
        "trackingCodes": [],
    }


def order_json(
    rng: random.Random,
    *,
    order_id: str,
    number: str,
    created_at: datetime,
    sales_channel_id: str,
    state: tuple[str, str],
    currency: str,
    currency_loaded: bool,
    amounts: dict[str, Any],
    associations: dict[str, Any],
) -> dict[str, Any]:
    """The order itself. ``state``: (technical name, display name); ``currency_loaded`` False
    leaves ``currency`` null (``currencyId`` still set); ``amounts``: the cart's
    :meth:`~integration_project.sandbox.order_prices.Cart.order_fields`; ``associations``:
    ``orderCustomer``, ``billingAddress``, ``deliveries`` and ``lineItems``, in that order."""
    created = format_shop_datetime(created_at)
    technical, name = state
    return {
        "id": order_id,
        "versionId": _VERSION,
        "orderNumber": number,
        "autoIncrement": int(number),
        "billingAddressId": associations["billingAddress"]["id"],
        "billingAddressVersionId": _VERSION,
        "currencyId": stable_id("currency", currency),
        "languageId": stable_id("language", "de-DE"),
        "salesChannelId": sales_channel_id,
        "stateId": stable_id("state", "order.state", technical),
        "orderDateTime": created,
        "orderDate": created_at.date().isoformat(),
        "createdAt": created,
        "updatedAt": None,
        **amounts,
        "deepLinkCode": f"{rng.getrandbits(128):032x}",
        "customerComment": None,
        "affiliateCode": None,
        "campaignCode": None,
        "customFields": None,
        "ruleIds": [],
        "stateMachineState": _state_json("order.state", technical, name),
        "currency": currency_json(currency) if currency_loaded else None,
        **associations,
        "transactions": [transaction_json(order_id, created, amounts["price"])],
    }
