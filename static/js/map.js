// @ts-check
// The Leaflet map: one layer group of circle markers keyed by worker id and moved with setLatLng,
// the followed worker's fading trail, following a worker, and fitting the team into view.
// Uses the global `L` of vendor/leaflet/leaflet.js, loaded by the template before the modules.

import { el } from "./util.js";

/** @typedef {import("./types.js").Worker} Worker */
/** @typedef {import("./types.js").Config} Config */
/** @typedef {import("./types.js").WorkerStateName} WorkerStateName */
/** @typedef {[number, number]} LatLng */

const COLOURS = { online: "#1a7f37", stale: "#b35c00", offline: "#6e7781" };
const FOLLOWED_OUTLINE = "#0b1f33";
const TRAIL_COLOUR = "#0b5cad";
// The trail fades in a few steps rather than per segment: four polylines cost the same to draw
// whatever the trail's length.
const TRAIL_STEPS = 4;
const ARROW_KEYS = new Set(["ArrowUp", "ArrowDown", "ArrowLeft", "ArrowRight"]);

/**
 * @param {WorkerStateName} state
 * @param {boolean} followed
 */
function markerStyle(state, followed) {
  return {
    radius: followed ? 10 : 7,
    color: followed ? FOLLOWED_OUTLINE : "#ffffff",
    weight: followed ? 3 : 2,
    fillColor: COLOURS[state] || COLOURS.offline,
    fillOpacity: state === "offline" ? 0.6 : 0.95,
  };
}

export class TeamMap {
  /**
   * @param {HTMLElement} element
   * @param {Readonly<Config>} config
   * @param {{ onMarkerClick?: (id: number) => void, onUserMove?: () => void, onTilesFailed?: () => void }} [callbacks]
   */
  constructor(element, config, { onMarkerClick = () => {}, onUserMove = () => {}, onTilesFailed = () => {} } = {}) {
    this.config = config;
    this.onMarkerClick = onMarkerClick;
    // Canvas draws a thousand circles far faster than a thousand SVG or DOM nodes.
    this.map = L.map(element, { preferCanvas: true }).setView(config.defaultCenter, config.defaultZoom);
    if (config.tileUrl) {
      const tiles = L.tileLayer(config.tileUrl, { attribution: config.tileAttribution, maxZoom: 19 });
      // One failed tile on a flaky network is normal; report only when none ever loaded.
      let loaded = false;
      tiles.once("tileload", () => { loaded = true; });
      tiles.once("tileerror", () => { if (!loaded) onTilesFailed(); });
      tiles.addTo(this.map);
    }
    // Trails get their own pane below the markers, so a marker is never hidden by its own trail.
    this.map.createPane("trails").style.zIndex = "390";
    /** @type {L.Polyline[]} */
    this.trail = [];
    for (let step = 0; step < TRAIL_STEPS; step += 1) {
      this.trail.push(L.polyline([], {
        pane: "trails",
        interactive: false,
        color: TRAIL_COLOUR,
        weight: 4,
        lineCap: "round",
        opacity: 0.15 + (0.75 * (step + 1)) / TRAIL_STEPS,
      }).addTo(this.map));
    }
    this.layer = L.layerGroup().addTo(this.map);
    /** @type {Map<number, L.CircleMarker>} */
    this.markers = new Map(); // worker id -> L.circleMarker
    /** @type {Map<number, { state: WorkerStateName, name: string, label: HTMLElement }>} */
    this.drawn = new Map(); // worker id -> {state, name, label}: what the marker shows now
    /** @type {number | null} */
    this.followed = null;

    // Following stops as soon as the user moves the map themselves; programmatic pans fire
    // neither of these.
    this.map.on("dragstart", onUserMove);
    element.addEventListener("keydown", (event) => {
      if (ARROW_KEYS.has(event.key)) onUserMove();
    });
    // Leaflet only notices window resizes; the side panel can resize the map on its own.
    if (window.ResizeObserver) new ResizeObserver(() => this.map.invalidateSize()).observe(element);
  }

  /**
   * Draw or move a worker's marker; cheap when nothing but the position changed.
   * @param {Worker} worker
   */
  show(worker) {
    if (worker.lat === null) return;
    /** @type {LatLng} */
    const latlng = [worker.lat, worker.lng];
    let marker = this.markers.get(worker.id);
    if (!marker) {
      const label = el("span", { className: "marker-label", text: worker.name });
      marker = L.circleMarker(latlng, markerStyle(worker.state, worker.id === this.followed));
      marker.bindTooltip(label, { direction: "top", offset: [0, -8] });
      marker.on("click", () => this.onMarkerClick(worker.id));
      this.layer.addLayer(marker);
      this.markers.set(worker.id, marker);
      this.drawn.set(worker.id, { state: worker.state, name: worker.name, label });
    } else {
      marker.setLatLng(latlng);
      this.restyle(worker);
    }
    if (worker.id === this.followed) {
      this.drawTrail(worker);
      this.map.panTo(latlng, { animate: true, duration: 0.5 });
    }
  }

  /**
   * Restyle or rename a worker's marker without moving it (presence, staleness).
   * @param {Worker} worker
   */
  restyle(worker) {
    const marker = this.markers.get(worker.id);
    if (!marker) return;
    const drawn = this.drawn.get(worker.id);
    if (drawn.state !== worker.state) {
      drawn.state = worker.state;
      marker.setStyle(markerStyle(worker.state, worker.id === this.followed));
    }
    if (drawn.name !== worker.name) {
      drawn.name = worker.name;
      drawn.label.textContent = worker.name;
    }
  }

  /** @param {number} id */
  remove(id) {
    const marker = this.markers.get(id);
    if (!marker) return;
    this.layer.removeLayer(marker);
    this.markers.delete(id);
    this.drawn.delete(id);
  }

  /**
   * Follow a worker (or nobody, with null): centre on it now and pan as it moves.
   * @param {Worker | null} worker
   */
  follow(worker) {
    const previous = this.followed;
    this.followed = worker ? worker.id : null;
    for (const id of [previous, this.followed]) {
      const marker = this.markers.get(id);
      if (marker) marker.setStyle(markerStyle(this.drawn.get(id).state, id === this.followed));
    }
    if (!worker) {
      this.drawTrail(null);
      return;
    }
    const marker = this.markers.get(worker.id);
    if (marker) marker.bringToFront();
    this.drawTrail(worker);
    if (worker.lat !== null) {
      // Following from a world view would show nothing useful: zoom in to street level.
      const zoom = Math.max(this.map.getZoom(), this.config.followZoom);
      this.map.setView([worker.lat, worker.lng], zoom);
    }
  }

  /**
   * Draw a worker's trail (or none, with null) as TRAIL_STEPS runs sharing their end points.
   * @param {Worker | null} worker
   */
  drawTrail(worker) {
    /** @type {LatLng[]} */
    const points = worker ? worker.trail.map((point) => [point[0], point[1]]) : [];
    const size = Math.max(1, Math.ceil((points.length - 1) / TRAIL_STEPS));
    // Count runs back from the newest point, so that a short trail is drawn in the boldest steps.
    for (let step = 0; step < TRAIL_STEPS; step += 1) {
      const end = points.length - 1 - (TRAIL_STEPS - 1 - step) * size;
      const run = end > 0 ? points.slice(Math.max(0, end - size), end + 1) : [];
      this.trail[step].setLatLngs(run);
    }
  }

  /**
   * Fit every worker with a known position into view; return whether there was any.
   * @param {Iterable<Worker>} workers
   */
  fitTeam(workers) {
    /** @type {LatLng[]} */
    const points = [];
    for (const worker of workers) if (worker.lat !== null) points.push([worker.lat, worker.lng]);
    if (points.length === 0) return false;
    const bounds = L.latLngBounds(points);
    if (bounds.getNorthEast().equals(bounds.getSouthWest())) {
      this.map.setView(bounds.getCenter(), this.config.followZoom);
    } else {
      this.map.fitBounds(bounds, { padding: [40, 40], maxZoom: 17 });
    }
    return true;
  }
}
