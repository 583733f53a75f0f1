"""The work the order page detaches: sending the receipt, after the response has gone."""

from __future__ import annotations

import logging
import os
import time

from django.conf import settings
from django.utils import timezone

from .models import Order

logger = logging.getLogger("catalog")


def send_receipt(order_id: int) -> None:
    """Render the receipt and mail it: slow, and the customer need not wait for it.

    ``detach(send_receipt, order.pk)`` starts it once the order page's response has
    been sent: in this process, on Wove's thread pool (``mode="background"``), or in a
    forked child process (``mode="fork"``). It records when it started and which process
    ran it, so the order page can show that it began after the response.
    """
    Order.objects.filter(pk=order_id).update(
        receipt_started_at=timezone.now(), receipt_pid=os.getpid()
    )
    time.sleep(settings.DEMO_RECEIPT_SECONDS)  # render the PDF, talk to the mail server
    Order.objects.filter(pk=order_id).update(receipt_sent_at=timezone.now())
    logger.info("catalog: receipt for order %s sent by process %s", order_id, os.getpid())
