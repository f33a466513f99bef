import { api, boot } from "./app.js";

const form = document.getElementById("login-form");
const error = document.getElementById("login-error");
form.addEventListener("submit", async (e) => {
  e.preventDefault();
  error.hidden = true;
  try {
    await api("POST", "/login", { username: form.username.value, password: form.password.value });
    location.href = boot.next || "/locations";
  } catch (x) {
    error.textContent = x.status === 401 ? "Wrong username or password." : x.message;
    error.hidden = false;
    form.password.select();
  }
});
