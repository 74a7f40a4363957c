"""charge-payment: pretends to charge ``amount`` for ``orderId`` and answers a receipt number."""

import hashlib


def run(orderId, amount):
    receipt = hashlib.sha256(f"{orderId}:{amount}".encode()).hexdigest()[:12]
    return {"charged": amount, "receipt": receipt}
