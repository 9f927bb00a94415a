/**
 * The comparison as an SVG, written by hand: one panel per policy, sharing the time axis and
 * the scale: demand (grey area), the policy's serving capacity (line), and the minutes that
 * violated the SLO (red marks under the panel).
 */
import type { ComparisonReport } from './compare.js';

const WIDTH = 1000;
const PANEL = 120;
const GAP = 34;
const LEFT = 64;
const RIGHT = 16;
const TOP = 46;
const COLORS = ['#1f77b4', '#9467bd', '#d62728', '#ff7f0e', '#2ca02c', '#8c564b', '#17becf', '#7f7f7f', '#e377c2', '#bcbd22'];

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const f1 = (v: number) => (Math.round(v * 10) / 10).toString();

function niceStep(max: number, ticks: number): number {
  const raw = max / ticks;
  const p = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

function timeLabel(startMs: number, offsetMs: number, spanMs: number): string {
  if (startMs > 0) {
    const d = new Date(startMs + offsetMs).toISOString();
    return spanMs > 3 * 86_400_000 ? d.slice(5, 10) : d.slice(5, 16).replace('T', ' ');
  }
  const h = offsetMs / 3_600_000;
  return spanMs > 3 * 86_400_000 ? `day ${f1(h / 24)}` : `${f1(h)} h`;
}

/** A step line through the values: its first y, and the `H x V y` commands from there to the end. */
function steps(values: readonly number[], n: number, x: (k: number) => number, y: (v: number) => number): { y0: string; d: string } {
  const y0 = f1(y(values[0] ?? 0));
  let d = '';
  let last = y0;
  for (let k = 1; k < n; k++) {
    const yy = f1(y(values[k] ?? 0));
    if (yy === last) continue;
    d += `H${f1(x(k))}V${yy}`;
    last = yy;
  }
  return { y0, d: `${d}H${f1(x(n))}` };
}

export function renderSvg(report: ComparisonReport): string {
  const rows = report.rows;
  const first = rows[0];
  if (!first) return `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="40"><text x="10" y="24">no runs</text></svg>\n`;
  const n = first.series.demand.length;
  const bucketMs = first.series.bucketMs;
  const spanMs = n * bucketMs;
  // One scale for every panel, so heights compare; a policy far above demand (fixed, a low
  // CPU target) is clipped at twice the demand's peak rather than flattening all the others.
  let peakDemand = 1;
  let peakAll = 1;
  for (const r of rows) {
    for (let k = 0; k < n; k++) {
      peakDemand = Math.max(peakDemand, r.series.demand[k] ?? 0);
      peakAll = Math.max(peakAll, r.series.capacity[k] ?? 0);
    }
  }
  let yMax = Math.min(Math.max(peakAll, peakDemand), 2 * peakDemand);
  const yStep = niceStep(yMax, 3);
  yMax = Math.ceil(yMax / yStep) * yStep;
  const plotW = WIDTH - LEFT - RIGHT;
  const height = TOP + rows.length * (PANEL + GAP) + 24;
  const x = (k: number) => LEFT + (k / Math.max(1, n)) * plotW;
  const y = (v: number, top: number) => top + PANEL - (v / yMax) * PANEL;

  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="sans-serif" font-size="11">`);
  out.push(`<rect width="100%" height="100%" fill="#fff"/>`);
  const s = report.settings;
  out.push(
    `<text x="${LEFT}" y="18" font-size="14" font-weight="bold">${esc(report.trace.name)}: demand and serving capacity (requests/s)</text>`,
    `<text x="${LEFT}" y="34" fill="#555">${esc(`capacity ${s.capacity} req/s per instance, boot ${s.boot}, SLO ${s.slo}, seed ${s.seed}; red: minutes violating the SLO`)}</text>`,
  );

  rows.forEach((r, idx) => {
    const top = TOP + idx * (PANEL + GAP) + 14;
    const color = COLORS[idx % COLORS.length] ?? '#000';
    const cost = r.costVsOracle === null ? '' : `, ${r.costVsOracle.toFixed(2)}× oracle`;
    out.push(
      `<text x="${LEFT}" y="${top - 4}" font-weight="bold" fill="${color}">${esc(r.name)}</text>`,
      `<text x="${LEFT + 8 + r.name.length * 7}" y="${top - 4}" fill="#555">${esc(`${Math.round(r.instanceHours).toLocaleString('en-US')} instance-hours${cost}, SLO violated ${(r.sloViolationShare * 100).toFixed(2)}% of minutes, peak ${r.peakInstances}`)}</text>`,
      `<rect x="${LEFT}" y="${top}" width="${plotW}" height="${PANEL}" fill="none" stroke="#ccc"/>`,
    );
    for (let v = 0; v <= yMax + 1e-9; v += yStep) {
      const yy = f1(y(v, top));
      out.push(`<line x1="${LEFT}" x2="${LEFT + plotW}" y1="${yy}" y2="${yy}" stroke="#eee"/>`, `<text x="${LEFT - 4}" y="${yy}" text-anchor="end" dy="3" fill="#777">${Math.round(v)}</text>`);
    }
    // Demand as an area, capacity as a line, both as steps (H and V keep the paths short).
    out.push(`<clipPath id="p${idx}"><rect x="${LEFT}" y="${top}" width="${plotW}" height="${PANEL}"/></clipPath>`);
    const base = f1(y(0, top));
    const demand = steps(r.series.demand, n, x, (v) => y(v, top));
    out.push(`<path d="M${f1(x(0))},${base}V${demand.y0}${demand.d}V${base}Z" fill="#bbb" fill-opacity="0.6" stroke="none" clip-path="url(#p${idx})"/>`);
    const capacity = steps(r.series.capacity, n, x, (v) => y(v, top));
    out.push(`<path d="M${f1(x(0))},${capacity.y0}${capacity.d}" fill="none" stroke="${color}" stroke-width="1.2" clip-path="url(#p${idx})"/>`);
    const marks: string[] = [];
    for (let k = 0; k < n; k++) {
      if ((r.series.violating[k] ?? 0) > 0) marks.push(`M${f1(x(k + 0.5))},${top + PANEL + 2}v6`);
    }
    if (marks.length > 0) out.push(`<path d="${marks.join('')}" stroke="#d00" stroke-width="1.5"/>`);
  });

  const axisY = TOP + rows.length * (PANEL + GAP) + 4;
  const ticks = 6;
  for (let j = 0; j <= ticks; j++) {
    const off = (spanMs * j) / ticks;
    const xx = f1(LEFT + (plotW * j) / ticks);
    out.push(`<text x="${xx}" y="${axisY}" text-anchor="${j === 0 ? 'start' : j === ticks ? 'end' : 'middle'}" fill="#555">${esc(timeLabel(first.series.startMs, off, spanMs))}</text>`);
  }
  out.push('</svg>', '');
  return out.join('\n');
}
