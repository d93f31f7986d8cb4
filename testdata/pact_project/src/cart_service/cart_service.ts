// Cart Service: keeps shopping carts and totals them (contract: cart_service).
export const PACT_TOTAL = "PACT:cart_service:total";

export interface Line {
  sku: string;
  qty: number;
  unitCents: number;
}

export function total(lines: Line[]): number {
  return lines.reduce((sum, l) => sum + l.qty * l.unitCents, 0);
}
