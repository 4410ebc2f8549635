import { defineConfig } from "vite";

// Built once and committed (ui/dist): the gateway embeds these three files, so running aisle
// needs no Node. Fixed names, so the gateway can include them by path.
export default defineConfig({
  base: "/_aisle/ui/",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    assetsInlineLimit: 0,
    rollupOptions: {
      output: {
        entryFileNames: "app.js",
        chunkFileNames: "app-[name].js",
        assetFileNames: "app[extname]",
      },
    },
  },
});
