export { default } from "../../configs/vitest.base.ts";
