// A schematic map of incidents and warning areas, drawn as SVG by this script alone: no base map
// (installations are offline, so no tiles), no library. console.js announces what it shows
// ("dutylink:board" with the board's incidents, "dutylink:incident" with one incident) and the
// map is drawn anew from that, so it follows the board's live changes. Coordinates are WGS-84
// from the gateway's answer, already redacted for the officer's agency: a location its policy
// withholds is not in the answer, so it is not on the map.
//
// Projection: plain equirectangular around the middle of what is shown, in kilometres, scaled
// to the bounding box of every point, polygon and circle with padding. Good enough for a city;
// not for areas across the antimeridian or near the poles.
"use strict";
(function () {
  const { t, DICTIONARIES } = window.DutyLinkI18n;
  Object.assign(DICTIONARIES.zh, {
    "map.heading": "地图",
    "map.show": "显示地图",
    "map.hide": "隐藏地图",
    "map.none": "没有可显示的位置或预警区域",
    "map.note": "示意图:无底图(离线),经纬度等距投影。",
    "map.incident": "事件",
    "map.area": "预警区域",
    "map.unplaced": "无位置的事件",
  });
  Object.assign(DICTIONARIES.en, {
    "map.heading": "Map",
    "map.show": "Show map",
    "map.hide": "Hide map",
    "map.none": "No location or warning area to show",
    "map.note": "Schematic: no base map (offline), equirectangular projection.",
    "map.incident": "Incident",
    "map.area": "Warning area",
    "map.unplaced": "Incidents without a location",
  });

  const SVG = "http://www.w3.org/2000/svg";
  const WIDTH = 1200;  // wide and low: it sits above the board's table
  const HEIGHT = 360;
  const PADDING = 28;  // px kept clear on each side, so points at the edge stay whole
  const MIN_SPAN_KM = 2;  // one incident alone is shown with about this much around it
  const KM_PER_DEGREE_LAT = 110.574;
  const KM_PER_DEGREE_LON_AT_EQUATOR = 111.320;
  const CIRCLE_STEPS = 64;
  const SCALE_BAR_PX = 120;  // about this long; its length in km is rounded to 1, 2 or 5 × 10ⁿ
  const HIDDEN = "dutylink.map.hidden";

  function svg(tag, attributes, text) {
    const made = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes || {})) made.setAttribute(name, String(value));
    if (text !== undefined) made.textContent = String(text);
    return made;
  }

  function titled(node, text) {
    node.appendChild(svg("title", {}, text));  // the browser's tooltip on hover
    return node;
  }

  // A circle of `radiusKm` around (lat, lon) as a ring of points, so it projects like a polygon.
  function circleRing(center, radiusKm) {
    const lat = center.latitude || 0;
    const lon = center.longitude || 0;
    const dLat = radiusKm / KM_PER_DEGREE_LAT;
    const dLon = radiusKm / (KM_PER_DEGREE_LON_AT_EQUATOR * Math.max(Math.cos(lat * Math.PI / 180), 1e-6));
    const ring = [];
    for (let step = 0; step < CIRCLE_STEPS; step++) {
      const angle = (2 * Math.PI * step) / CIRCLE_STEPS;
      ring.push({ latitude: lat + dLat * Math.sin(angle), longitude: lon + dLon * Math.cos(angle) });
    }
    return ring;
  }

  // What to draw: each incident with a location as a point, each warning area once (a warning
  // naming two incidents of the board is on both).
  function features(incidents) {
    const points = [];
    const areas = new Map();
    const unplaced = [];
    for (const incident of incidents) {
      const where = incident.location;
      if (where && (where.latitude || where.longitude)) points.push({ incident, where });
      else unplaced.push(incident);
      for (const area of incident.warning_areas || []) {
        const rings = (area.polygons || []).map((polygon) => polygon.points || [])
          .concat((area.circles || []).map((circle) => circleRing(circle.center || {}, circle.radius_km || 0)))
          .filter((ring) => ring.length > 0);
        const key = [area.warning, area.area_desc, JSON.stringify(rings.map((r) => r[0]))].join("|");
        if (rings.length && !areas.has(key)) areas.set(key, { area, rings });
      }
    }
    return { points, areas: [...areas.values()], unplaced };
  }

  // Equirectangular projection in km around the middle of the bounding box, scaled to fit.
  // (Loops, not Math.min(...values): a CAP polygon may have thousands of points.)
  function middle(values) {
    let low = Infinity;
    let high = -Infinity;
    for (const value of values) { low = Math.min(low, value); high = Math.max(high, value); }
    return (low + high) / 2;
  }

  function projection(points, areas) {
    const all = points.map((p) => p.where);
    for (const feature of areas) for (const ring of feature.rings) for (const p of ring) all.push(p);
    const midLat = middle(all.map((p) => p.latitude || 0));
    const midLon = middle(all.map((p) => p.longitude || 0));
    const kmX = KM_PER_DEGREE_LON_AT_EQUATOR * Math.cos(midLat * Math.PI / 180);
    const toKm = (p) => [((p.longitude || 0) - midLon) * kmX, (midLat - (p.latitude || 0)) * KM_PER_DEGREE_LAT];
    let spanX = MIN_SPAN_KM;
    let spanY = MIN_SPAN_KM;
    for (const p of all) {
      const [x, y] = toKm(p);
      spanX = Math.max(spanX, 2 * Math.abs(x));
      spanY = Math.max(spanY, 2 * Math.abs(y));
    }
    const pxPerKm = Math.min((WIDTH - 2 * PADDING) / spanX, (HEIGHT - 2 * PADDING) / spanY);
    return {
      pxPerKm,
      at(p) {
        const [x, y] = toKm(p);
        return [WIDTH / 2 + x * pxPerKm, HEIGHT / 2 + y * pxPerKm];
      },
    };
  }

  function niceKm(pxPerKm) {
    const wanted = SCALE_BAR_PX / pxPerKm;
    const power = Math.pow(10, Math.floor(Math.log10(wanted)));
    const step = [5, 2, 1].find((m) => m * power <= wanted) || 1;
    return step * power;
  }

  function scaleBar(pxPerKm) {
    const km = niceKm(pxPerKm);
    const length = km * pxPerKm;
    const x = 12;
    const y = HEIGHT - 14;
    const bar = svg("g", { class: "map-scale", "data-testid": "map-scale", "data-km": km });
    bar.appendChild(svg("path", { d: `M${x} ${y - 5}V${y}H${x + length}V${y - 5}` }));
    const label = Number(km.toPrecision(3)).toString() + " km";
    bar.appendChild(svg("text", { x: x + length + 6, y }, label));
    return bar;
  }

  function incidentHref(incident, plane) {
    return "/incident/" + encodeURIComponent(incident.incident_id) + "?plane=" + encodeURIComponent(plane);
  }

  function pointMark(incident, at, plane, linked) {
    const [x, y] = at;
    const attributes = { "data-testid": "map-incident", "data-incident-id": incident.incident_id, class: "map-incident" };
    const mark = linked ? svg("a", { ...attributes, href: incidentHref(incident, plane) }) : svg("g", attributes);
    if ((incident.overdue || 0) > 0) mark.classList.add("overdue");
    if (incident.open === false || incident.open === undefined) mark.classList.add("finished");
    titled(mark, [incident.incident_id, incident.title].filter(Boolean).join(" — "));
    mark.appendChild(svg("circle", { cx: x.toFixed(1), cy: y.toFixed(1), r: 7 }));
    mark.appendChild(svg("text", { x: (x + 10).toFixed(1), y: (y + 4).toFixed(1) }, incident.title || incident.incident_id));
    return mark;
  }

  function areaShape(feature, project) {
    const { area, rings } = feature;
    const group = svg("g", { "data-testid": "map-area", "data-warning": area.warning || "", class: "map-area" });
    titled(group, [t("map.area"), area.headline, area.area_desc].filter(Boolean).join(" — "));
    for (const ring of rings) {
      const points = ring.map((p) => project.at(p).map((v) => v.toFixed(1)).join(",")).join(" ");
      group.appendChild(svg("polygon", { points }));
    }
    return group;
  }

  // Draws `incidents` into `host` (an element), replacing what was there. `linked`: a point is a
  // link to its incident's page (the board); the incident page shows only its own.
  function draw(host, incidents, plane, linked) {
    const { points, areas, unplaced } = features(incidents);
    const canvas = svg("svg", {
      viewBox: `0 0 ${WIDTH} ${HEIGHT}`, class: "map-canvas", role: "img",
      "aria-label": t("map.heading"), "data-testid": "map-canvas",
    });
    const children = [canvas];
    if (points.length === 0 && areas.length === 0) {
      canvas.appendChild(svg("text", { x: WIDTH / 2, y: HEIGHT / 2, class: "map-empty", "text-anchor": "middle" }, t("map.none")));
    } else {
      const project = projection(points, areas);
      for (const feature of areas) canvas.appendChild(areaShape(feature, project));
      for (const { incident, where } of points) canvas.appendChild(pointMark(incident, project.at(where), plane, linked));
      canvas.appendChild(scaleBar(project.pxPerKm));
      canvas.appendChild(svg("text", { x: WIDTH - 12, y: 20, class: "map-north", "text-anchor": "end" }, "N ↑"));
    }
    if (linked && unplaced.length) {
      children.push(Object.assign(document.createElement("p"), {
        className: "note", textContent: t("map.unplaced") + ": " + unplaced.map((i) => i.incident_id).join(", "),
      }));
    }
    children.push(Object.assign(document.createElement("p"), { className: "note", textContent: t("map.note") }));
    host.replaceChildren(...children);
  }

  // The show/hide button: an officer who wants the table's room hides the map (remembered).
  function toggle(host) {
    const button = document.getElementById("map-toggle");
    if (!button) return;
    const label = () => { button.textContent = t(host.hidden ? "map.show" : "map.hide"); };
    host.hidden = window.localStorage.getItem(HIDDEN) === "1";
    label();
    button.addEventListener("click", () => {
      host.hidden = !host.hidden;
      window.localStorage.setItem(HIDDEN, host.hidden ? "1" : "0");
      label();
    });
    document.addEventListener("dutylink:language", label);
  }

  window.DutyLinkMap = { draw };
  // Listening from the start: console.js may announce its first board before the page is ready.
  const host = () => document.getElementById("map");
  document.addEventListener("dutylink:board", (shown) => {
    if (host()) draw(host(), shown.detail.incidents, shown.detail.plane, true);
  });
  document.addEventListener("dutylink:incident", (shown) => {
    if (host()) draw(host(), [shown.detail.incident], shown.detail.plane, false);
  });
  document.addEventListener("DOMContentLoaded", () => { if (host()) toggle(host()); });
})();
