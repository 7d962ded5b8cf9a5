// @ts-check
// What the history page draws on the map: each worker's track in its own colour, its stops, the
// replay's markers (keyed by worker id, moved with setLatLng) and the markers of "where was
// everyone at". Uses the global `L` of vendor/leaflet/leaflet.js.
//
// Tracks and markers have a canvas each, in panes of their own: a replay moves the markers many
// times a second, and on a shared canvas every move would redraw a day's track under them too.

import { el } from "../util.js";
import { clockLabel, durationLabel, timeLabel } from "./range.js";

/** @typedef {import("./types.js").TrackPoint} TrackPoint */
/** @typedef {import("./types.js").Stop} Stop */
/** @typedef {import("./types.js").FeedPosition} FeedPosition */

// Distinct on the map's light background and from each other; a team larger than this repeats.
export const COLOURS = [
  "#0b5cad", "#d1242f", "#1a7f37", "#8250df", "#bf6a00",
  "#0a7e8c", "#bf3989", "#4d2d00", "#57606a", "#1b1f24",
];

/**
 * @param {number} index  the worker's place among those drawn
 */
export function colourAt(index) {
  return COLOURS[index % COLOURS.length];
}

export class HistoryLayers {
  /**
   * @param {L.Map} map
   */
  constructor(map) {
    this.map = map;
    map.createPane("history-tracks").style.zIndex = "380";
    map.createPane("history-markers").style.zIndex = "620";
    // Leaflet simplifies each line for the zoom it is drawn at (smoothFactor, in pixels), so a
    // day at one point a second is drawn as a few thousand segments, not 86,400.
    this.trackRenderer = L.canvas({ pane: "history-tracks", padding: 0.2 });
    this.markerRenderer = L.canvas({ pane: "history-markers", padding: 0.2, tolerance: 3 });
    this.tracks = L.layerGroup().addTo(map);
    this.stops = L.layerGroup().addTo(map);
    this.replay = L.layerGroup().addTo(map);
    this.moment = L.layerGroup().addTo(map);
    /** @type {Map<number, L.Polyline>} */
    this.lines = new Map();
    /** @type {Map<number, L.CircleMarker[]>} */
    this.stopMarkers = new Map();
    /** @type {Map<number, L.CircleMarker>} */
    this.replayMarkers = new Map();
    /** @type {Map<number, L.CircleMarker>} */
    this.momentMarkers = new Map();
  }

  /**
   * Draw a worker's track, replacing what was drawn of it.
   * @param {number} id
   * @param {readonly TrackPoint[]} points
   * @param {string} colour
   */
  drawTrack(id, points, colour) {
    const latlngs = new Array(points.length);
    for (let index = 0; index < points.length; index += 1) {
      latlngs[index] = L.latLng(points[index][1], points[index][2]);
    }
    const line = L.polyline(latlngs, {
      renderer: this.trackRenderer,
      pane: "history-tracks",
      color: colour,
      weight: 3,
      opacity: 0.8,
      smoothFactor: 1.5,
      interactive: false,
    });
    this.lines.get(id)?.remove();
    this.lines.set(id, line);
    this.tracks.addLayer(line);
  }

  /**
   * Mark a worker's stops: a circle each, whose popup says from when to when.
   * @param {number} id
   * @param {string} name
   * @param {readonly Stop[]} stops
   * @param {string} colour
   */
  drawStops(id, name, stops, colour) {
    const markers = stops.map((stop) => {
      const marker = L.circleMarker([stop.lat, stop.lng], {
        renderer: this.markerRenderer,
        pane: "history-markers",
        radius: 6,
        color: colour,
        weight: 3,
        fillColor: "#ffffff",
        fillOpacity: 1,
      });
      marker.bindPopup(el("div", { className: "stop-popup" }, [
        el("strong", { text: name }),
        el("span", { text: `Stopped ${durationLabel(stop.until - stop.since)}` }),
        el("span", { text: `${timeLabel(stop.since)} – ${clockLabel(stop.until)}` }),
      ]));
      this.stops.addLayer(marker);
      return marker;
    });
    this.stopMarkers.set(id, markers);
  }

  /**
   * Put a worker's replay marker at `latlng`, or hide it (null: no position yet at that time).
   * @param {number} id
   * @param {string} name
   * @param {[number, number] | null} latlng
   * @param {string} colour
   */
  moveReplay(id, name, latlng, colour) {
    let marker = this.replayMarkers.get(id);
    if (!latlng) {
      if (marker) this.replay.removeLayer(marker);
      return;
    }
    if (!marker) {
      marker = this._marker(latlng, name, colour);
      this.replayMarkers.set(id, marker);
    } else {
      marker.setLatLng(latlng);
    }
    if (!this.replay.hasLayer(marker)) this.replay.addLayer(marker);
  }

  /**
   * Show where each worker was at a moment, replacing what was shown.
   * @param {readonly FeedPosition[]} positions
   * @param {(id: number) => string} nameOf
   * @param {(id: number) => string} colourOf
   */
  showMoment(positions, nameOf, colourOf) {
    this.moment.clearLayers();
    this.momentMarkers.clear();
    for (const position of positions) {
      const marker = this._marker([position.lat, position.lng], nameOf(position.id),
        colourOf(position.id), `${nameOf(position.id)}, ${clockLabel(position.ts)}`);
      marker.setStyle({ radius: 9, color: "#0b1f33", weight: 3 });
      this.momentMarkers.set(position.id, marker);
      this.moment.addLayer(marker);
    }
  }

  /**
   * @param {[number, number]} latlng
   * @param {string} name
   * @param {string} colour
   * @param {string} [label]  the tooltip's text, the name unless given
   */
  _marker(latlng, name, colour, label = name) {
    const marker = L.circleMarker(latlng, {
      renderer: this.markerRenderer,
      pane: "history-markers",
      radius: 8,
      color: "#ffffff",
      weight: 2,
      fillColor: colour,
      fillOpacity: 0.95,
    });
    marker.bindTooltip(el("span", { className: "marker-label", text: label }), {
      direction: "top",
      offset: [0, -8],
    });
    return marker;
  }

  /**
   * Show these corners, without animation: the tracks are then projected once, at the zoom
   * they will be seen at.
   * @param {[[number, number], [number, number]]} corners
   */
  fit(corners) {
    const bounds = L.latLngBounds(corners);
    if (bounds.getNorthEast().equals(bounds.getSouthWest())) {
      this.map.setView(bounds.getCenter(), 16, { animate: false });
    } else {
      this.map.fitBounds(bounds, { padding: [40, 40], maxZoom: 17, animate: false });
    }
  }

  /** Remove the tracks, stops and replay markers (the moment's markers stay). */
  clearTracks() {
    for (const group of [this.tracks, this.stops, this.replay]) group.clearLayers();
    this.lines.clear();
    this.stopMarkers.clear();
    this.replayMarkers.clear();
  }

  clearMoment() {
    this.moment.clearLayers();
    this.momentMarkers.clear();
  }
}
