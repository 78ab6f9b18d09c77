
// === src/fast.js, appended by build.sh to both generated modules ===
//
// The pick fast path. Returning a string from WebAssembly through
// wasm-bindgen costs more than the pick itself (an externref, a result
// array, a call back in to free the table slot), so picks answer a number,
// the endpoint's slot, and the strings are kept here by slot: a slot names
// one address for the life of the module (src/lib.rs, `Slots`), so nothing
// here goes stale when the mesh changes. `mesh.pick(dest, ...)` with string
// arguments parses `dest` once per mesh (a `Destination` kept by string).
// Plain JavaScript that runs as CommonJS (pkg/node) and as an ES module
// (pkg/web): it refers only to names both generated modules declare.
{
  const PICK_FAILED = 0xffffffff;
  const NO_SLOT = 0xfffffffe;
  /** Endpoint strings by slot, filled in slot order. */
  const endpoints = [];
  /** Destinations parsed by `mesh.pick`, per mesh, by string. */
  const parsed = Symbol("pobox parsed destinations");
  /** The most destinations kept per mesh; past it the cache starts over. */
  const PARSED_MAX = 1024;

  const answer = (slot) => {
    if (slot < NO_SLOT) {
      const s = endpoints[slot];
      return s !== undefined ? s : (endpoints[slot] = __endpointString(slot));
    }
    if (slot === NO_SLOT) return __endpointString(slot);
    throw __takePickError();
  };

  Destination.prototype.pick = function pick(clientIp, key) {
    return answer(this.__pickSlot(clientIp, key));
  };

  const forget = (mesh) => {
    const cache = mesh[parsed];
    if (cache === undefined) return;
    for (const dest of cache.values()) dest.free();
    cache.clear();
  };

  const slowPick = Mesh.prototype.pick;
  Mesh.prototype.pick = function pick(dest, clientIp, key) {
    // Anything but strings (a Uint8Array key, a wrong type) takes the
    // general path, which also throws its errors.
    if (typeof dest !== "string" || (clientIp != null && typeof clientIp !== "string") ||
        (key != null && typeof key !== "string")) {
      return slowPick.call(this, dest, clientIp, key);
    }
    let cache = this[parsed];
    if (cache === undefined) cache = this[parsed] = new Map();
    let destination = cache.get(dest);
    if (destination === undefined) {
      if (this.__wbg_ptr === 0) return slowPick.call(this, dest, clientIp, key); // freed: throws
      try {
        destination = this.destination(dest);
      } catch {
        return slowPick.call(this, dest, clientIp, key); // a bad destination: throws its error
      }
      if (cache.size >= PARSED_MAX) forget(this);
      cache.set(dest, destination);
    }
    return answer(destination.__pickSlot(clientIp, key));
  };

  const free = Mesh.prototype.free;
  Mesh.prototype.free = function () {
    forget(this);
    return free.call(this);
  };
}
