// loopback: preloaded (node --require) into the MCP test server, which listens on every
// interface unless told otherwise and has no option for it: binds it to 127.0.0.1 only.
'use strict';
const net = require('net');
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const a = args[0];
  if (typeof a === 'number' || (typeof a === 'string' && /^[0-9]+$/.test(a))) {
    if (typeof args[1] !== 'string')
      args.splice(1, 0, '127.0.0.1');
    else
      args[1] = '127.0.0.1';
  } else if (a !== null && typeof a === 'object' && a.path === undefined) {
    args[0] = Object.assign({}, a, { host: '127.0.0.1' });
  }
  return listen.apply(this, args);
};
