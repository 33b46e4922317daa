// The mesh page's viewer (evaluation/mesh_page.py): a sortable table and a WebGL view of the selected row's
// meshes. Written for this project; no library. Data comes from the inert JSON blocks of the page and is put
// into the document with textContent only.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const state = { rows: [], columns: [], sortKey: null, sortDir: 1, selected: -1, item: null, meshes: [],
    mode: "side", preferredMode: "side", yaw: 0, pitch: 0, dist: 2, target: [0, 0, 0], up: [0, 0, 1], home: null, dirty: true };
  const viewer = { frames: 0, selected: null, error: null };
  window.apsViewer = viewer;

  function fail(message) {
    viewer.error = String(message);
    const box = $("error");
    box.textContent = "error: " + message;
    box.hidden = false;
  }
  window.addEventListener("error", (e) => fail(e.message));

  // ---------- the table ----------
  const table = JSON.parse($("aps-table").textContent);
  state.columns = table.columns;
  state.rows = table.rows.map((r, i) => Object.assign({ index: i }, r));

  function cellText(value, column) {
    if (value === null || value === undefined) return column.numeric ? "nan" : "";
    if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toPrecision(4);
    return String(value);
  }

  function buildHead() {
    const tr = document.createElement("tr");
    state.columns.forEach((c) => {
      const th = document.createElement("th");
      const arrow = c.higher_is_better === true ? " \u2191" : c.higher_is_better === false ? " \u2193" : "";
      th.textContent = c.label + arrow;
      th.dataset.key = c.key;
      th.title = "sort by " + c.label;
      th.addEventListener("click", () => sortBy(c.key));
      tr.appendChild(th);
    });
    $("table").tHead.appendChild(tr);
  }

  function compare(a, b, column) {
    const x = a.values[column.key], y = b.values[column.key];
    const missingX = x === null || x === undefined || x === "", missingY = y === null || y === undefined || y === "";
    if (missingX || missingY) return missingX === missingY ? 0 : missingX ? 1 : -1;  // missing last, both ways
    if (column.numeric && typeof x === "number" && typeof y === "number") return state.sortDir * (x - y);
    return state.sortDir * String(x).localeCompare(String(y), undefined, { numeric: true });
  }

  function sortBy(key) {
    state.sortDir = state.sortKey === key ? -state.sortDir : 1;
    state.sortKey = key;
    const column = state.columns.find((c) => c.key === key);
    state.rows.sort((a, b) => compare(a, b, column) || a.index - b.index);
    document.querySelectorAll("#table th").forEach((th) => {
      th.classList.toggle("asc", th.dataset.key === key && state.sortDir > 0);
      th.classList.toggle("desc", th.dataset.key === key && state.sortDir < 0);
    });
    buildBody();
  }

  function buildBody() {
    const body = $("table").tBodies[0];
    const filter = $("filter").value.trim().toLowerCase();
    body.textContent = "";
    state.rows.forEach((row) => {
      if (filter && !state.columns.some((c) => !c.numeric && String(row.values[c.key] ?? "").toLowerCase()
        .includes(filter))) return;
      const tr = document.createElement("tr");
      tr.dataset.index = row.index;
      if (row.index === state.selected) tr.classList.add("selected");
      if (!row.has_view) tr.classList.add("noview");
      state.columns.forEach((c) => {
        const td = document.createElement("td");
        td.textContent = cellText(row.values[c.key], c);
        if (c.numeric) td.classList.add("num");
        tr.appendChild(td);
      });
      tr.addEventListener("click", () => select(row.index));
      body.appendChild(tr);
    });
  }

  // ---------- one row's payload ----------
  function bytesOf(b64) {
    const bin = atob(b64);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  }

  function flatMesh(record) {  // unindexed triangles with face normals: facets show as they are
    if (!record.faces) return null;
    const q = new Uint16Array(bytesOf(record.positions));
    const idx = record.index_bits === 32 ? new Uint32Array(bytesOf(record.indices))
      : new Uint16Array(bytesOf(record.indices));
    const nv = q.length / 3, p = new Float32Array(q.length);
    for (let i = 0; i < nv; i++) for (let k = 0; k < 3; k++)
      p[3 * i + k] = record.origin[k] + (q[3 * i + k] / 65535) * record.extent[k];
    const pos = new Float32Array(idx.length * 3), nrm = new Float32Array(idx.length * 3);
    const lo = [Infinity, Infinity, Infinity], hi = [-Infinity, -Infinity, -Infinity];
    for (let f = 0; f < idx.length; f += 3) {
      const a = 3 * idx[f], b = 3 * idx[f + 1], c = 3 * idx[f + 2];
      const ux = p[b] - p[a], uy = p[b + 1] - p[a + 1], uz = p[b + 2] - p[a + 2];
      const vx = p[c] - p[a], vy = p[c + 1] - p[a + 1], vz = p[c + 2] - p[a + 2];
      let nx = uy * vz - uz * vy, ny = uz * vx - ux * vz, nz = ux * vy - uy * vx;
      const len = Math.hypot(nx, ny, nz) || 1;
      nx /= len; ny /= len; nz /= len;
      [a, b, c].forEach((v, j) => {
        for (let k = 0; k < 3; k++) {
          pos[3 * (f + j) + k] = p[v + k];
          lo[k] = Math.min(lo[k], p[v + k]); hi[k] = Math.max(hi[k], p[v + k]);
        }
        nrm[3 * (f + j)] = nx; nrm[3 * (f + j) + 1] = ny; nrm[3 * (f + j) + 2] = nz;
      });
    }
    return { pos, nrm, count: idx.length, lo, hi };
  }

  function select(index) {
    const row = state.rows.find((r) => r.index === index);
    if (!row) return;
    state.selected = index;
    viewer.selected = row.id;
    document.querySelectorAll("#table tbody tr").forEach((tr) =>
      tr.classList.toggle("selected", Number(tr.dataset.index) === index));
    $("title").textContent = row.id;
    $("images").textContent = "";
    $("links").textContent = "";
    freeMeshes();
    const block = $("aps-item-" + index);
    if (!block) {
      $("title").textContent = row.id + ": no view (evaluated without pictures, or before pages existed)";
      state.dirty = true;
      return;
    }
    const item = JSON.parse(block.textContent);
    item.images.forEach((im) => {
      const fig = document.createElement("figure");
      const img = document.createElement("img");
      img.src = im.src;
      img.alt = im.caption;
      const cap = document.createElement("figcaption");
      cap.textContent = im.caption;
      fig.append(img, cap);
      $("images").appendChild(fig);
    });
    (item.links || []).forEach((l) => {
      const a = document.createElement("a");
      a.href = l.href;  // relative: a file beside the page
      a.textContent = l.text;
      $("links").append(a, " ");
    });
    state.meshes = item.meshes.map((m) => ({ record: m, geometry: flatMesh(m) }));
    state.meshes.forEach((m) => { if (m.geometry) upload(m); });
    const modeBox = $("mode");
    modeBox.options[2].textContent = (item.meshes[0] || {}).name ? item.meshes[0].name + " only" : "first only";
    modeBox.options[3].textContent = (item.meshes[1] || {}).name ? item.meshes[1].name + " only" : "second only";
    [0, 1, 3].forEach((o) => { modeBox.options[o].disabled = item.meshes.length < 2; });
    state.mode = item.meshes.length < 2 ? "0" : state.preferredMode;
    modeBox.value = state.mode;
    frame(item.view);
    state.dirty = true;
  }

  // ---------- WebGL ----------
  const canvas = $("canvas");
  const gl = canvas.getContext("webgl", { antialias: true, preserveDrawingBuffer: true });
  if (!gl) fail("this browser gives no WebGL context: the table works, the 3D view does not");
  let program = null, locations = null;
  const VS = `attribute vec3 p; attribute vec3 n; uniform mat4 mvp; uniform mat4 view; varying vec3 vn;
    void main() { vn = mat3(view) * n; gl_Position = mvp * vec4(p, 1.0); }`;
  const FS = `precision mediump float; varying vec3 vn; uniform vec3 rgb; uniform float alpha;
    void main() { vec3 n = normalize(vn); float key = abs(dot(n, normalize(vec3(0.3, 0.5, 1.0))));
      float fill = abs(dot(n, normalize(vec3(-0.6, -0.2, 0.6))));
      gl_FragColor = vec4(rgb * (0.25 + 0.65 * key + 0.2 * fill), alpha); }`;

  function shader(type, source) {
    const s = gl.createShader(type);
    gl.shaderSource(s, source);
    gl.compileShader(s);
    if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s));
    return s;
  }
  if (gl) {
    program = gl.createProgram();
    gl.attachShader(program, shader(gl.VERTEX_SHADER, VS));
    gl.attachShader(program, shader(gl.FRAGMENT_SHADER, FS));
    gl.linkProgram(program);
    if (!gl.getProgramParameter(program, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(program));
    locations = { p: gl.getAttribLocation(program, "p"), n: gl.getAttribLocation(program, "n"),
      mvp: gl.getUniformLocation(program, "mvp"), view: gl.getUniformLocation(program, "view"),
      rgb: gl.getUniformLocation(program, "rgb"), alpha: gl.getUniformLocation(program, "alpha") };
  }

  function upload(m) {
    if (!gl) return;
    m.buffers = [m.geometry.pos, m.geometry.nrm].map((data) => {
      const b = gl.createBuffer();
      gl.bindBuffer(gl.ARRAY_BUFFER, b);
      gl.bufferData(gl.ARRAY_BUFFER, data, gl.STATIC_DRAW);
      return b;
    });
  }
  function freeMeshes() {
    state.meshes.forEach((m) => (m.buffers || []).forEach((b) => gl.deleteBuffer(b)));
    state.meshes = [];
  }

  const FOV = 35;  // degrees, vertical

  // ---------- the camera: an orbit about the scene's up axis, the same for every viewport ----------
  const sub = (a, b) => [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
  const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
  const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
  const unit = (a) => { const l = Math.hypot(a[0], a[1], a[2]) || 1; return [a[0] / l, a[1] / l, a[2] / l]; };

  function basis() {  // two axes spanning the plane perpendicular to up
    const u = state.up;
    const a = unit(cross(Math.abs(u[0]) < 0.9 ? [1, 0, 0] : [0, 1, 0], u));
    return [a, cross(u, a)];
  }

  function frame(view) {  // fit the meshes, look from the stored input camera where there is one
    const lo = [Infinity, Infinity, Infinity], hi = [-Infinity, -Infinity, -Infinity];
    state.meshes.forEach((m) => { if (m.geometry) for (let k = 0; k < 3; k++) {
      lo[k] = Math.min(lo[k], m.geometry.lo[k]); hi[k] = Math.max(hi[k], m.geometry.hi[k]); } });
    if (!isFinite(lo[0])) { lo.splice(0, 3, -0.5, -0.5, -0.5); hi.splice(0, 3, 0.5, 0.5, 0.5); }
    state.target = [0, 1, 2].map((k) => (lo[k] + hi[k]) / 2);
    const radius = Math.max(Math.hypot(hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]) / 2, 1e-3);
    state.up = view && view.up ? unit(view.up) : [0, 0, 1];
    let dir = view && view.eye ? unit(sub(view.eye, state.target)) : unit([1, -1.4, 0.8]);
    const [a, b] = basis();
    state.pitch = Math.asin(Math.max(-1, Math.min(1, dot(dir, state.up))));
    state.yaw = Math.atan2(dot(dir, b), dot(dir, a));
    state.dist = radius / Math.sin((FOV / 2) * Math.PI / 180) * 1.05;
    state.home = { yaw: state.yaw, pitch: state.pitch, dist: state.dist, target: state.target.slice() };
    state.dirty = true;
  }
  function eye() {
    const [a, b] = basis(), u = state.up, cp = Math.cos(state.pitch), sp = Math.sin(state.pitch);
    const cy = Math.cos(state.yaw), sy = Math.sin(state.yaw);
    return [0, 1, 2].map((k) => state.target[k] + state.dist * (cp * (cy * a[k] + sy * b[k]) + sp * u[k]));
  }

  function lookAt(from, to, up) {  // column-major, as WebGL takes it
    const z = unit(sub(from, to)), x = unit(cross(up, z)), y = cross(z, x);
    return [x[0], y[0], z[0], 0, x[1], y[1], z[1], 0, x[2], y[2], z[2], 0,
      -dot(x, from), -dot(y, from), -dot(z, from), 1];
  }
  function perspective(fovDeg, aspect, near, far) {
    const f = 1 / Math.tan((fovDeg * Math.PI) / 360), nf = 1 / (near - far);
    return [f / aspect, 0, 0, 0, 0, f, 0, 0, 0, 0, (far + near) * nf, -1, 0, 0, 2 * far * near * nf, 0];
  }
  function multiply(a, b) {
    const out = new Array(16).fill(0);
    for (let c = 0; c < 4; c++) for (let r = 0; r < 4; r++) for (let k = 0; k < 4; k++)
      out[4 * c + r] += a[4 * k + r] * b[4 * c + k];
    return out;
  }

  // ---------- drawing ----------
  function drawMesh(m, mvp, view, alpha) {
    if (!m || !m.geometry || !m.buffers) return;
    gl.uniformMatrix4fv(locations.mvp, false, new Float32Array(mvp));
    gl.uniformMatrix4fv(locations.view, false, new Float32Array(view));
    gl.uniform3fv(locations.rgb, new Float32Array(m.record.rgb));
    gl.uniform1f(locations.alpha, alpha);
    [locations.p, locations.n].forEach((loc, i) => {
      gl.bindBuffer(gl.ARRAY_BUFFER, m.buffers[i]);
      gl.enableVertexAttribArray(loc);
      gl.vertexAttribPointer(loc, 3, gl.FLOAT, false, 0, 0);
    });
    gl.drawArrays(gl.TRIANGLES, 0, m.geometry.count);
  }

  function label(text, left, width) {
    const div = document.createElement("div");
    div.textContent = text;
    div.style.left = left + "px";
    div.style.width = width + "px";
    $("labels").appendChild(div);
  }

  function draw() {
    const ratio = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(canvas.clientWidth * ratio)), h = Math.max(1, Math.round(canvas.clientHeight * ratio));
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    gl.viewport(0, 0, w, h);
    gl.disable(gl.SCISSOR_TEST);
    gl.clearColor(1, 1, 1, 1);
    gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    $("labels").textContent = "";
    if (!state.meshes.length) return;
    gl.useProgram(program);
    gl.enable(gl.DEPTH_TEST);
    const panes = state.mode === "side" ? [[0], [1]] : state.mode === "overlay" ? [[0, 1]] : [[Number(state.mode)]];
    const view = lookAt(eye(), state.target, state.up);
    panes.forEach((shown, i) => {
      const x = Math.round((i * w) / panes.length), pw = Math.round(((i + 1) * w) / panes.length) - x;
      gl.viewport(x, 0, pw, h);
      gl.enable(gl.SCISSOR_TEST);
      gl.scissor(x, 0, pw, h);
      const near = Math.max(state.dist * 0.01, 1e-4);
      const mvp = multiply(perspective(FOV, pw / h, near, state.dist * 10), view);
      shown.forEach((k, j) => {
        const overlaid = j > 0;
        if (overlaid) { gl.enable(gl.BLEND); gl.blendFunc(gl.SRC_ALPHA, gl.ONE_MINUS_SRC_ALPHA); gl.depthMask(false); }
        drawMesh(state.meshes[k], mvp, view, overlaid ? 0.35 : 1);
        gl.disable(gl.BLEND);
        gl.depthMask(true);
      });
      const names = shown.map((k) => state.meshes[k] ? state.meshes[k].record.name +
        (state.meshes[k].record.faces ? " (" + state.meshes[k].record.faces + " faces shown)" : " (no surface)") : "");
      label(names.join(" + "), x / ratio, pw / ratio);
    });
    gl.disable(gl.SCISSOR_TEST);
  }

  function loop() {
    if (state.dirty && gl) {
      state.dirty = false;
      try { draw(); viewer.frames += 1; } catch (e) { fail(e.message); }
    }
    requestAnimationFrame(loop);
  }

  // ---------- input ----------
  let drag = null;
  canvas.addEventListener("pointerdown", (e) => {
    drag = { x: e.clientX, y: e.clientY, pan: e.shiftKey || e.button === 2 };
    canvas.setPointerCapture(e.pointerId);
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!drag) return;
    const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    drag.x = e.clientX; drag.y = e.clientY;
    if (drag.pan) {
      const z = unit(sub(eye(), state.target)), x = unit(cross(state.up, z)), y = cross(z, x);
      const s = (state.dist * 1.5) / canvas.clientHeight;
      state.target = [0, 1, 2].map((k) => state.target[k] - s * (dx * x[k] - dy * y[k]));
    } else {
      state.yaw -= dx * 0.01;
      state.pitch = Math.max(-1.55, Math.min(1.55, state.pitch + dy * 0.01));
    }
    state.dirty = true;
  });
  const endDrag = () => { drag = null; };
  canvas.addEventListener("pointerup", endDrag);
  canvas.addEventListener("pointercancel", endDrag);
  canvas.addEventListener("contextmenu", (e) => e.preventDefault());
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    state.dist *= Math.exp(Math.max(-1, Math.min(1, e.deltaY * 0.001)));
    state.dirty = true;
  }, { passive: false });
  const home = () => { if (state.home) Object.assign(state, { yaw: state.home.yaw, pitch: state.home.pitch,
    dist: state.home.dist, target: state.home.target.slice(), dirty: true }); };
  canvas.addEventListener("dblclick", home);
  $("home").addEventListener("click", home);
  $("mode").addEventListener("change", (e) => {
    state.mode = state.preferredMode = e.target.value;
    state.dirty = true;
  });
  $("filter").addEventListener("input", buildBody);
  window.addEventListener("resize", () => { state.dirty = true; });
  document.addEventListener("keydown", (e) => {  // up/down: the previous or next row as the table is sorted
    if (e.target === $("filter") || (e.key !== "ArrowDown" && e.key !== "ArrowUp")) return;
    const shown = Array.from(document.querySelectorAll("#table tbody tr")).map((tr) => Number(tr.dataset.index));
    const at = shown.indexOf(state.selected);
    const next = shown[Math.max(0, Math.min(shown.length - 1, at + (e.key === "ArrowDown" ? 1 : -1)))];
    if (next !== undefined) { e.preventDefault(); select(next); }
  });

  buildHead();
  buildBody();
  const first = state.rows.find((r) => r.has_view) || state.rows[0];
  if (first) select(first.index);
  requestAnimationFrame(loop);
})();
