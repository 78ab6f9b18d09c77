// The ESM entry for Node: the CommonJS build, re-exported. One module
// instance serves both `import` and `require`, so a Mesh made through one is
// the same class as through the other.
import pobox from "./pkg/node/pobox_wasm.js";

export const { Mesh, Destination } = pobox;
export default pobox;
