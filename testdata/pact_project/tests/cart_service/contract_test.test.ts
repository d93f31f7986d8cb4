import { total } from "../../src/cart_service/cart_service";

test("empty cart totals 0", () => {
  expect(total([])).toBe(0);
});

test("sums qty * unitCents", () => {
  expect(total([{ sku: "a", qty: 2, unitCents: 150 }])).toBe(300);
});
