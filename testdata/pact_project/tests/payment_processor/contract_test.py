"""Contract tests for payment_processor."""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "src"))

from payment_processor.payment_processor import charge_card, refund  # noqa: E402


class PaymentTest(unittest.TestCase):
    def test_receipt_prefix(self):
        self.assertTrue(charge_card("4111111111111111", 500).startswith("rcpt_"))

    def test_non_positive_amount(self):
        with self.assertRaises(ValueError):
            charge_card("4111111111111111", 0)

    def test_refund(self):
        self.assertEqual(refund(1000, 25), 250)


if __name__ == "__main__":
    unittest.main()
