"""Spryker Commerce OS as an order source: the Glue Backend API's token endpoint and the Data
Exchange API (dynamic entities) over ``spy_sales_order``; see ``reference/spryker.md``."""
