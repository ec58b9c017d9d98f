# Checks by hand that PEFT itself loads an adapter exported by the library (treelora/models/peft.hpp) and computes
# the library's outputs. Needs torch, transformers and peft (no dependency of the library or its tests); run it by
# hand where they are installed:
#   TREELORA_PEFT_CHECK_DIR=peft_check ./tests/test_peft -tc="a Hugging Face folder*"   (in the build folder)
#   python3 tests/data/peft/check_with_peft.py peft_check
import json, sys
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import ViTForImageClassification

folder = sys.argv[1] if len(sys.argv) > 1 else "peft_check"
golden = json.load(open(f"{folder}/golden.json"))
images = torch.tensor(golden["images"]["values"], dtype=torch.float32).reshape(golden["images"]["shape"])
expected = torch.tensor(golden["expected"]["values"], dtype=torch.float64).reshape(golden["expected"]["shape"])
base = ViTForImageClassification.from_pretrained(f"{folder}/base").eval()  # written by the library's writer
model = PeftModel.from_pretrained(base, f"{folder}/adapter").eval()
state = model.state_dict()
for key, value in load_file(f"{folder}/adapter/adapter_model.safetensors").items():  # every tensor really loaded
    loaded = key.replace(".lora_A.", ".lora_A.default.").replace(".lora_B.", ".lora_B.default.")
    loaded = loaded.replace("classifier.", "classifier.modules_to_save.default.")
    assert torch.equal(state[loaded], value), key
with torch.no_grad():
    logits = model(pixel_values=images).logits.double()
    with model.disable_adapter():
        unadapted = model(pixel_values=images).logits.double()
scale = max(1.0, expected.abs().max().item())
error = (logits - expected).abs().max().item() / scale
print(f"PEFT vs library: relative error {error:.3g} (without the adapter: {(unadapted - expected).abs().max().item() / scale:.3g})")
sys.exit(0 if error <= 1e-5 else 1)
