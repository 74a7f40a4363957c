"""validate-order: checks an order and prices it; the workflow branches on the answer.

Input ``{"orderId": "A-1", "items": [{"sku": "pen", "price": 2.5, "qty": 4}]}`` →
``{"ok": true, "total": 10.0}``; an empty order or a bad price → ``{"ok": false, "reason": ...}``.
An order without ``items`` raises KeyError (the workflow's catch turns it into Rejected).
"""


def run(**order):
    items = order["items"]
    if not items:
        return {"ok": False, "total": 0, "reason": "no items"}
    total = 0.0
    for item in items:
        price, qty = item.get("price"), item.get("qty", 1)
        if not isinstance(price, (int, float)) or price < 0 or not isinstance(qty, int) or qty < 1:
            return {"ok": False, "total": 0, "reason": f"bad line {item!r}"}
        total += price * qty
    return {"ok": True, "total": round(total, 2)}
