import { describe, expect, it } from "vitest";
import { Window, bytes, duration, progress, rate, usedPercent } from "./format";

describe("format", () => {
  it("prints bytes in binary units", () => {
    expect(bytes(0)).toBe("0 B");
    expect(bytes(1536)).toBe("1.5 KiB");
    expect(bytes(12 * 1024 * 1024)).toBe("12.0 MiB");
  });
  it("prints durations", () => {
    expect(duration(12)).toBe("12s");
    expect(duration(250)).toBe("4m 10s");
    expect(duration(3 * 86400 + 4 * 3600)).toBe("3d 4h");
  });
  it("computes rates and survives counter restarts", () => {
    expect(rate(null, { t: 1000, v: 5 })).toBe(0);
    expect(rate({ t: 0, v: 0 }, { t: 2000, v: 10 })).toBe(5);
    expect(rate({ t: 0, v: 10 }, { t: 1000, v: 3 })).toBe(0);
  });
  it("keeps a bounded window", () => {
    const w = new Window(2, 2);
    w.push(1, [1, 10]);
    w.push(2, [2, 20]);
    w.push(3, [3, 30]);
    expect(w.times).toEqual([2, 3]);
    expect(w.series[1]).toEqual([20, 30]);
  });
  it("computes shares", () => {
    expect(usedPercent(200, 50)).toBe(75);
    expect(progress(3, 4)).toBe(75);
    expect(progress(1, 0)).toBe(0);
  });
});
