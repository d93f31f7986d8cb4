"""Contract tests for auth_module (run: python3 -m unittest discover -s tests/auth_module -p '*_test.py')."""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "src"))

from auth_module.auth_module import TokenClaims, validate_token  # noqa: E402


class ValidateTokenTest(unittest.TestCase):
    def test_valid_token(self):
        self.assertEqual(validate_token("alice.2000.sig", 1000), TokenClaims("alice", 2000))

    def test_expired_token(self):
        with self.assertRaises(PermissionError):
            validate_token("alice.10.sig", 1000)

    def test_empty_part_is_malformed(self):
        with self.assertRaises(ValueError):
            validate_token("alice..sig", 1000)


if __name__ == "__main__":
    unittest.main()
