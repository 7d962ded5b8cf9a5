// The tracking page's service worker (served by tracking/track_views.py at /track/sw.js, scope
// /track/): keeps the page and its modules in a cache so that the page opens without a network
// and can be installed. Network first, so that a deployment reaches phones at once; the cache
// only answers when the network does not. It never touches /track/enrol (a POST with a
// one-time code), the manifest's dynamic answers or any socket (service workers never see
// WebSockets).
"use strict";

const CACHE = {{ cache_name_json|safe }};
const CACHE_PREFIX = "teamtrack-track-";
// The page, its stylesheet, its icon and manifest, and every module it imports.
const SHELL = {{ shell_json|safe }};
const PAGE = {{ page_json|safe }};
const NEVER = {{ never_json|safe }};

self.addEventListener("install", (event) => {
  event.waitUntil(
    caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((names) => Promise.all(
        names.filter((name) => name.startsWith(CACHE_PREFIX) && name !== CACHE)
          .map((name) => caches.delete(name)),
      ))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET") return;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin || NEVER.includes(url.pathname)) return;
  // The page itself whatever its query, or one of the files it is made of.
  const key = url.pathname === PAGE ? PAGE : url.pathname;
  if (key !== PAGE && !SHELL.includes(url.pathname)) return;
  event.respondWith(networkFirst(request, key));
});

async function networkFirst(request, key) {
  const cache = await caches.open(CACHE);
  try {
    const response = await fetch(request);
    if (response.ok && response.type === "basic") await cache.put(key, response.clone());
    return response;
  } catch (error) {
    const cached = await cache.match(key);
    if (cached) return cached;
    throw error;
  }
}
