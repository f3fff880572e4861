"""Schemathesis hooks of the gateway contract run.

Generated orders name random SKUs, which no catalog holds: the order is refused
with a 404 before placement is ever tried. This hook swaps the SKUs of generated
`POST /v1/orders` bodies for SKUs the seeded partner can order (on its level's
wholesale list, with stock; the contract script passes them in
GATEWAY_CONTRACT_SKUS), keeps the quantities small and drops the sales rep, so
most generated orders reach placement. Bodies that are not an order's shape are
left as drawn (they test the refusals).
"""

import os

import schemathesis

SKUS = [s for s in os.environ.get("GATEWAY_CONTRACT_SKUS", "").split(",") if s]


@schemathesis.hook
def map_body(ctx, body):
    operation = getattr(ctx, "operation", None)
    if not SKUS or operation is None:
        return body
    if str(operation.method).upper() != "POST" or operation.path != "/v1/orders":
        return body
    if not isinstance(body, dict) or not isinstance(body.get("lines"), list):
        return body
    lines = [line for line in body["lines"] if isinstance(line, dict)][: len(SKUS)]
    for i, line in enumerate(lines):
        line["sku"] = SKUS[i]
        quantity = line.get("quantity")
        if isinstance(quantity, int) and not isinstance(quantity, bool) and quantity > 3:
            line["quantity"] = 1 + quantity % 3
    body["lines"] = lines
    body.pop("salesRep", None)
    return body
