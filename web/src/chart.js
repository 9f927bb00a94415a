// A role's chart: desired, serving and the scaling metric over the last hour, with its scaling
// decisions marked. uPlot draws on a canvas: cheap to update every few seconds.
import uPlot from 'uplot';

/**
 * Vertical marks at decision times, with the new count.
 * @param {() => { t: number, label: string }[]} marks
 */
function decisionMarks(marks) {
  return {
    hooks: {
      /** @param {uPlot} u */
      draw: (u) => {
        const ctx = u.ctx;
        ctx.save();
        ctx.strokeStyle = '#6a1b9a';
        ctx.fillStyle = '#4a148c';
        ctx.setLineDash([4, 3]);
        ctx.lineWidth = 1.5 * devicePixelRatio;
        ctx.font = `${11 * devicePixelRatio}px system-ui, sans-serif`;
        const { top, height, left, width } = u.bbox;
        for (const m of marks()) {
          const x = u.valToPos(m.t, 'x', true);
          if (x < left || x > left + width) continue;
          ctx.beginPath();
          ctx.moveTo(x, top);
          ctx.lineTo(x, top + height);
          ctx.stroke();
          ctx.fillText(`▼ ${m.label}`, x + 3 * devicePixelRatio, top + 12 * devicePixelRatio);
        }
        ctx.restore();
      },
    },
  };
}

/**
 * @param {HTMLElement} el
 * @param {string} metricName
 * @param {() => { t: number, label: string }[]} marks
 */
export function makeChart(el, metricName, marks) {
  const width = Math.max(320, el.clientWidth || 720);
  /** @type {uPlot.Options} */
  const opts = {
    width,
    height: 260,
    plugins: [decisionMarks(marks)],
    scales: { x: { time: true }, n: { range: (_u, _min, max) => [0, Math.max(2, Math.ceil(max + 1))] }, m: { range: (_u, _min, max) => [0, max > 0 ? max * 1.2 : 1] } },
    axes: [
      { stroke: '#1b1f24' },
      { scale: 'n', label: 'instances', stroke: '#1b1f24' },
      { scale: 'm', side: 1, label: metricName, stroke: '#1b1f24', grid: { show: false } },
    ],
    series: [
      {},
      { label: 'desired', scale: 'n', stroke: '#1f5fbf', width: 2, dash: [8, 4], paths: uPlot.paths.stepped?.({ align: 1 }) },
      { label: 'serving', scale: 'n', stroke: '#0b6b2b', width: 2, paths: uPlot.paths.stepped?.({ align: 1 }) },
      { label: metricName, scale: 'm', stroke: '#b04a00', width: 1.5, dash: [2, 3] },
    ],
  };
  const u = new uPlot(opts, [[], [], [], []], el);
  return {
    /** @param {{ t: number, desired: number, serving: number, metric: number|null }[]} samples */
    update(samples) {
      u.setData([
        samples.map((s) => s.t / 1000),
        samples.map((s) => s.desired),
        samples.map((s) => s.serving),
        samples.map((s) => s.metric),
      ]);
    },
    resize() {
      u.setSize({ width: Math.max(320, el.clientWidth || 720), height: 260 });
    },
    destroy() {
      u.destroy();
    },
  };
}
