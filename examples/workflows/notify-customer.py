"""notify-customer: the last step; "sends" the receipt (prints it into the activation's logs)."""


def run(orderId, receipt):
    message = f"order {orderId} is paid, receipt {receipt}"
    print(message)
    return {"sent": True, "message": message}
