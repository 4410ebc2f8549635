// Pure helpers of the dashboard (unit-tested in format.test.ts).

/** Bytes as a short human string: 0 B, 1.5 KiB, 12.0 MiB, … */
export function bytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${Math.round(v)} B` : `${v.toFixed(1)} ${units[i]}`;
}

/** A duration in seconds as "3d 4h", "2h 5m", "4m 10s", "12s". */
export function duration(secs: number): string {
  const s = Math.max(0, Math.floor(secs));
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60), r = s % 60;
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${r}s`;
  return `${r}s`;
}

/** Per-second rate between two samples of a counter; 0 when the counter restarted. */
export function rate(prev: { t: number; v: number } | null, cur: { t: number; v: number }): number {
  if (!prev || cur.t <= prev.t || cur.v < prev.v) return 0;
  return (cur.v - prev.v) / ((cur.t - prev.t) / 1000);
}

/** A fixed-length sliding window of samples (oldest dropped). */
export class Window {
  readonly times: number[] = [];
  readonly series: number[][];
  constructor(readonly size: number, seriesCount: number) {
    this.series = Array.from({ length: seriesCount }, () => []);
  }
  push(t: number, values: number[]): void {
    this.times.push(t);
    values.forEach((v, i) => this.series[i].push(v));
    if (this.times.length > this.size) {
      this.times.shift();
      this.series.forEach((s) => s.shift());
    }
  }
}

/** Share used of a disk, in percent, one decimal. */
export function usedPercent(total: number, free: number): number {
  if (total <= 0) return 0;
  return Math.round(((total - free) / total) * 1000) / 10;
}

/** Job progress in percent (0 when the total is not known yet). */
export function progress(done: number, total: number): number {
  return total > 0 ? Math.min(100, Math.round((done / total) * 100)) : 0;
}
