// Small canvas line charts for the ttsd dashboard: time on x, one or more series, optional dashed
// threshold lines (SLOs). No dependencies.
"use strict";
(function () {
  const PAD = { left: 52, right: 12, top: 10, bottom: 22 };

  function css(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  // Round steps (1, 2, 2.5, 5 × 10^n) so axis labels read well.
  function niceStep(span, ticks) {
    const raw = span / Math.max(ticks, 1);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 2.5, 5, 10]) {
      if (raw <= m * mag) return m * mag;
    }
    return 10 * mag;
  }

  // Enough decimals to tell two ticks `step` apart (0.0025 needs four), thousands as "k".
  function axisLabel(v, step) {
    if (v >= 1000 && step >= 100) return Number((v / 1000).toFixed(2)).toString() + "k";
    let decimals = Math.max(0, Math.ceil(-Math.log10(step) - 1e-9));
    while (decimals < 6 && Math.abs(Math.round(step * 10 ** decimals) - step * 10 ** decimals) > 1e-6) decimals++;
    return v.toFixed(decimals);
  }

  function clock(ms) {
    const d = new Date(ms);
    return String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0") + ":" +
      String(d.getSeconds()).padStart(2, "0");
  }

  class LineChart {
    constructor(canvas, options) {
      this.canvas = canvas;
      this.options = options;
      this.data = null;
    }

    // data: {t: [ms...], series: [{name, color, values: [number|null...]}]}; windowMs: visible span.
    draw(data, windowMs) {
      this.data = data;
      this.windowMs = windowMs;
      const canvas = this.canvas;
      const dpr = window.devicePixelRatio || 1;
      const width = canvas.clientWidth, height = canvas.clientHeight;
      if (width === 0 || height === 0) return;
      if (canvas.width !== Math.round(width * dpr) || canvas.height !== Math.round(height * dpr)) {
        canvas.width = Math.round(width * dpr);
        canvas.height = Math.round(height * dpr);
      }
      const ctx = canvas.getContext("2d");
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.clearRect(0, 0, width, height);
      const t1 = data.t.length ? data.t[data.t.length - 1] : Date.now();
      const t0 = t1 - windowMs;
      const plotW = width - PAD.left - PAD.right, plotH = height - PAD.top - PAD.bottom;
      let max = 0;
      for (const s of data.series) {
        for (let i = 0; i < s.values.length; i++) {
          const v = s.values[i];
          if (v !== null && data.t[i] >= t0 && v > max) max = v;
        }
      }
      for (const th of this.options.thresholds || []) max = Math.max(max, th.value * 1.15);
      if (this.options.max !== undefined) max = Math.max(max, this.options.max);
      if (max <= 0) max = this.options.minMax || 1;
      const step = niceStep(max, 4);
      const top = Math.ceil(max / step) * step;
      const x = (t) => PAD.left + ((t - t0) / windowMs) * plotW;
      const y = (v) => PAD.top + plotH - (v / top) * plotH;
      ctx.font = "11px system-ui, sans-serif";
      ctx.lineWidth = 1;
      ctx.strokeStyle = css("--line");
      ctx.fillStyle = css("--muted");
      ctx.textAlign = "right";
      ctx.textBaseline = "middle";
      for (let v = 0; v <= top + step / 2; v += step) {
        const yy = Math.round(y(v)) + 0.5;
        ctx.beginPath(); ctx.moveTo(PAD.left, yy); ctx.lineTo(width - PAD.right, yy); ctx.stroke();
        ctx.fillText(axisLabel(v, step), PAD.left - 6, yy);
      }
      ctx.textAlign = "center";
      ctx.textBaseline = "top";
      const xTicks = Math.max(2, Math.floor(plotW / 110));
      for (let i = 0; i <= xTicks; i++) {
        const t = t0 + (windowMs * i) / xTicks;
        const label = clock(t);
        const xx = Math.min(Math.max(x(t), PAD.left + 22), width - PAD.right - 22);
        ctx.fillText(label, xx, height - PAD.bottom + 6);
      }
      ctx.save();
      ctx.beginPath();
      ctx.rect(PAD.left, PAD.top, plotW, plotH);
      ctx.clip();
      for (const th of this.options.thresholds || []) {
        ctx.setLineDash([5, 4]);
        ctx.strokeStyle = css("--bad");
        const yy = Math.round(y(th.value)) + 0.5;
        ctx.beginPath(); ctx.moveTo(PAD.left, yy); ctx.lineTo(width - PAD.right, yy); ctx.stroke();
        ctx.setLineDash([]);
      }
      ctx.lineWidth = 1.7;
      ctx.lineJoin = "round";
      for (const s of data.series) {
        ctx.strokeStyle = s.color;
        ctx.beginPath();
        let pen = false;
        for (let i = 0; i < s.values.length; i++) {
          const v = s.values[i];
          if (v === null || v === undefined || data.t[i] < t0 - 2000) { pen = false; continue; }
          const xx = x(data.t[i]), yy = y(v);
          if (pen) ctx.lineTo(xx, yy); else ctx.moveTo(xx, yy);
          pen = true;
        }
        ctx.stroke();
      }
      ctx.restore();
    }

    redraw() {
      if (this.data) this.draw(this.data, this.windowMs);
    }
  }

  window.TtsCharts = { LineChart, clock };
})();
