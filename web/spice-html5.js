// The LGPL part of the web client. spice-html5 (LGPL-3.0-or-later) is not
// bundled into app.js: build.sh copies its files, unmodified, to
// dist/spice-html5/ and this module (copied beside app.js) re-exports the
// names the client uses; app.js loads it with import() when a SPICE desktop
// opens. So the library stays a separate module, replaceable by any other
// build of it (LGPL-3.0 section 4(d)(1)), with its notices intact; its licence
// texts are in dist/licenses/.

export { SpiceMainConn } from './spice-html5/main.js';
export { Constants } from './spice-html5/enums.js';
export {
  SpiceMiniData,
  SpiceMsgcKeyDown,
  SpiceMsgcKeyUp,
  SpiceMsgcMouseMotion,
  SpiceMsgcMousePosition,
  SpiceMsgcMousePress,
  SpiceMsgcMouseRelease,
} from './spice-html5/spicemsg.js';
