import react from '@vitejs/plugin-react';
import { defineConfig } from 'vitest/config';

/** Where `npm run dev` sends API and WebSocket requests. */
const gateway = process.env.MEDBAY_GATEWAY_URL ?? 'http://127.0.0.1:8470';

export default defineConfig({
  plugins: [react()],
  // relative asset URLs: the dashboard works wherever the gateway is mounted
  base: './',
  build: {
    // the gateway serves its package's static/ folder at / (medbay.gateway.api.PACKAGE_STATIC)
    outDir: '../src/medbay/gateway/static',
    emptyOutDir: true,
  },
  server: {
    proxy: {
      '/api': gateway,
      '/healthz': gateway,
      '/ws': { target: gateway, ws: true },
    },
  },
  test: {
    environment: 'jsdom',
    setupFiles: ['src/test/setup.ts'],
    include: ['src/**/*.test.{ts,tsx}'],
    restoreMocks: true,
    // A test renders Material UI in jsdom and acts as a user would (opening menus,
    // typing): about 0.5-2 s on an idle machine, up to five times that on a loaded
    // one (shared CI runners, other builds). The tests wait for what they expect,
    // never for a fixed time, so a longer limit only spares them spurious timeouts.
    testTimeout: 30_000,
  },
});
