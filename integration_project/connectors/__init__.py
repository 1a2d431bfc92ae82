"""Order sources besides the Shopware API, each turning its input into Shopware-shaped orders."""
