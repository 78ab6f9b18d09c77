export * from "./pkg/node/pobox_wasm.js";
import * as pobox from "./pkg/node/pobox_wasm.js";
export default pobox;
