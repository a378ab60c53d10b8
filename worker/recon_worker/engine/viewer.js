// recon-worker's 3D viewer for report.html: shows the report's own mesh.glb, inlined in the page as
// base64 (canvas data-glb), with WebGL. It reads what export.write_glb writes (one mesh, one primitive,
// POSITION, NORMAL, TEXCOORD_0, indices, a base-colour PNG) and nothing else; it fetches nothing.
// Drag to orbit, wheel to zoom. Shipped in the recon_worker package and inlined by engine/report.py.
(function () {
  "use strict";
  var canvas = document.getElementById("recon-viewer");
  if (!canvas) return;
  var status = document.getElementById("recon-viewer-status");
  function fail(message) { if (status) status.textContent = message; }

  function decode(base64) {
    var text = atob(base64), bytes = new Uint8Array(text.length);
    for (var i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
    return bytes.buffer;
  }

  function parseGlb(buffer) {
    var view = new DataView(buffer);
    if (view.getUint32(0, true) !== 0x46546c67) throw new Error("not a GLB");
    var jsonLength = view.getUint32(12, true);
    var json = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 20, jsonLength)));
    var binStart = 20 + jsonLength + 8;
    return { json: json, bin: buffer.slice(binStart, binStart + view.getUint32(20 + jsonLength, true)) };
  }

  function accessor(glb, index) {
    var acc = glb.json.accessors[index], bv = glb.json.bufferViews[acc.bufferView];
    var size = { SCALAR: 1, VEC2: 2, VEC3: 3, VEC4: 4 }[acc.type];
    var kind = { 5126: Float32Array, 5125: Uint32Array, 5123: Uint16Array, 5121: Uint8Array }[acc.componentType];
    var offset = (bv.byteOffset || 0) + (acc.byteOffset || 0);
    return new kind(glb.bin, offset, acc.count * size);
  }

  var gl = canvas.getContext("webgl2") || canvas.getContext("webgl");
  if (!gl) { fail("WebGL is not available in this browser."); return; }
  var uint32 = typeof WebGL2RenderingContext !== "undefined" && gl instanceof WebGL2RenderingContext;
  if (!uint32) uint32 = !!gl.getExtension("OES_element_index_uint");

  var glb;
  try { glb = parseGlb(decode(canvas.getAttribute("data-glb"))); } catch (e) { fail("mesh.glb: " + e.message); return; }
  var prim = glb.json.meshes[0].primitives[0];
  var positions = accessor(glb, prim.attributes.POSITION);
  var normals = prim.attributes.NORMAL !== undefined ? accessor(glb, prim.attributes.NORMAL) : null;
  var uvs = prim.attributes.TEXCOORD_0 !== undefined ? accessor(glb, prim.attributes.TEXCOORD_0) : null;
  var indices = accessor(glb, prim.indices);
  if (indices instanceof Uint32Array && !uint32) { fail("this browser cannot draw 32-bit indices"); return; }

  var lo = [Infinity, Infinity, Infinity], hi = [-Infinity, -Infinity, -Infinity];
  for (var i = 0; i < positions.length; i += 3) {
    for (var k = 0; k < 3; k++) { lo[k] = Math.min(lo[k], positions[i + k]); hi[k] = Math.max(hi[k], positions[i + k]); }
  }
  var center = [0, 1, 2].map(function (k) { return (lo[k] + hi[k]) / 2; });
  var radius = Math.hypot(hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]) / 2 || 1;

  function shader(type, source) {
    var s = gl.createShader(type);
    gl.shaderSource(s, source);
    gl.compileShader(s);
    if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s));
    return s;
  }
  var program = gl.createProgram();
  gl.attachShader(program, shader(gl.VERTEX_SHADER,
    "attribute vec3 position; attribute vec3 normal; attribute vec2 uv;" +
    "uniform mat4 mvp; varying vec3 vNormal; varying vec2 vUv;" +
    "void main() { vNormal = normal; vUv = uv; gl_Position = mvp * vec4(position, 1.0); }"));
  gl.attachShader(program, shader(gl.FRAGMENT_SHADER,
    "precision mediump float; uniform sampler2D base; uniform vec3 light; uniform float textured;" +
    "varying vec3 vNormal; varying vec2 vUv;" +
    "void main() { vec3 albedo = mix(vec3(0.8), texture2D(base, vUv).rgb, textured);" +
    "  float shade = 0.35 + 0.65 * max(dot(normalize(vNormal), light), 0.0);" +
    "  gl_FragColor = vec4(albedo * shade, 1.0); }"));
  gl.linkProgram(program);
  gl.useProgram(program);

  function attribute(name, data, size) {
    var location = gl.getAttribLocation(program, name);
    if (location < 0) return;
    if (!data) { gl.disableVertexAttribArray(location); return; }
    var buffer = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, buffer);
    gl.bufferData(gl.ARRAY_BUFFER, data, gl.STATIC_DRAW);
    gl.enableVertexAttribArray(location);
    gl.vertexAttribPointer(location, size, gl.FLOAT, false, 0, 0);
  }
  attribute("position", positions, 3);
  attribute("normal", normals, 3);
  attribute("uv", uvs, 2);
  var indexBuffer = gl.createBuffer();
  gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, indexBuffer);
  gl.bufferData(gl.ELEMENT_ARRAY_BUFFER, indices, gl.STATIC_DRAW);
  var indexType = indices instanceof Uint32Array ? gl.UNSIGNED_INT : indices instanceof Uint16Array ? gl.UNSIGNED_SHORT : gl.UNSIGNED_BYTE;

  var textured = 0;
  gl.uniform1f(gl.getUniformLocation(program, "textured"), 0);
  var material = glb.json.materials && glb.json.materials[prim.material];
  var baseTexture = material && material.pbrMetallicRoughness && material.pbrMetallicRoughness.baseColorTexture;
  if (baseTexture && uvs) {
    var image = glb.json.images[glb.json.textures[baseTexture.index].source];
    var bv = glb.json.bufferViews[image.bufferView];
    var blob = new Blob([new Uint8Array(glb.bin, bv.byteOffset || 0, bv.byteLength)], { type: image.mimeType });
    var picture = new Image();
    picture.onload = function () {
      var texture = gl.createTexture();
      gl.bindTexture(gl.TEXTURE_2D, texture);
      gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGB, gl.RGB, gl.UNSIGNED_BYTE, picture);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.LINEAR);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
      textured = 1;
      draw();
    };
    picture.src = URL.createObjectURL(blob);
  }

  var yaw = 0.6, pitch = 0.35, distance = 2.6 * radius;
  function multiply(a, b) {
    var out = new Float32Array(16);
    for (var r = 0; r < 4; r++) for (var c = 0; c < 4; c++) {
      var sum = 0;
      for (var k = 0; k < 4; k++) sum += a[k * 4 + r] * b[c * 4 + k];
      out[c * 4 + r] = sum;
    }
    return out;
  }
  function draw() {
    var aspect = canvas.width / canvas.height, near = distance / 20, far = distance * 4, f = 1 / Math.tan(0.5 * 0.7);
    var projection = new Float32Array([f / aspect, 0, 0, 0, 0, f, 0, 0, 0, 0, (far + near) / (near - far), -1,
      0, 0, 2 * far * near / (near - far), 0]);
    var cy = Math.cos(yaw), sy = Math.sin(yaw), cp = Math.cos(pitch), sp = Math.sin(pitch);
    // Camera: rotate the object by yaw (around y) and pitch (around x), then move it `distance` away.
    var rotation = new Float32Array([cy, sp * sy, -cp * sy, 0, 0, cp, sp, 0, sy, -sp * cy, cp * cy, 0, 0, 0, 0, 1]);
    var toCenter = new Float32Array([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, -center[0], -center[1], -center[2], 1]);
    var away = new Float32Array([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, -distance, 1]);
    var mvp = multiply(projection, multiply(away, multiply(rotation, toCenter)));
    gl.uniformMatrix4fv(gl.getUniformLocation(program, "mvp"), false, mvp);
    // A light from the camera's upper left, in the object's frame.
    var l = [-0.4, 0.6, 0.7], n = Math.hypot(l[0], l[1], l[2]);
    var world = [0, 1, 2].map(function (k) { return (rotation[k * 4] * l[0] + rotation[k * 4 + 1] * l[1] + rotation[k * 4 + 2] * l[2]) / n; });
    gl.uniform3fv(gl.getUniformLocation(program, "light"), world);
    gl.uniform1f(gl.getUniformLocation(program, "textured"), textured);
    gl.viewport(0, 0, canvas.width, canvas.height);
    gl.clearColor(1, 1, 1, 1);
    gl.enable(gl.DEPTH_TEST);
    gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    gl.drawElements(gl.TRIANGLES, indices.length, indexType, 0);
  }

  var dragging = null;
  canvas.addEventListener("pointerdown", function (e) { dragging = [e.clientX, e.clientY]; canvas.setPointerCapture(e.pointerId); });
  canvas.addEventListener("pointerup", function () { dragging = null; });
  canvas.addEventListener("pointermove", function (e) {
    if (!dragging) return;
    yaw += (e.clientX - dragging[0]) * 0.01;
    pitch = Math.max(-1.5, Math.min(1.5, pitch + (e.clientY - dragging[1]) * 0.01));
    dragging = [e.clientX, e.clientY];
    draw();
  });
  canvas.addEventListener("wheel", function (e) {
    e.preventDefault();
    distance = Math.max(radius * 1.2, Math.min(radius * 10, distance * Math.exp(e.deltaY * 0.001)));
    draw();
  }, { passive: false });
  draw();
  if (status) status.textContent = "drag to turn, scroll to zoom";
})();
