import pandas as pd
import pytest

from vis_steer_lens.saes import UnknownVisionReleaseError, get_release, list_vision_releases

GEMMA = "gemma-3-4b-it-vision-topk-8192"
INTERNVL = "internvl3-14b-vision-topk-8192"


def test_gemma_release_matches_the_papers_folders():
    release = get_release(GEMMA)
    assert release.repo_id == "javifer/google_gemma-3-4b-it-saes"
    assert release.model == "google/gemma-3-4b-it"
    assert release.format == "dictionary_learning"
    assert release.saes == {
        "blocks.6.hook_resid_post": "enc_res_out_layer_6_top_k_8192_25_1.0_HF_44499364/trainer_0",
        "blocks.16.hook_resid_post": "enc_res_out_layer_16_top_k_8192_25_1.0_HF_22191080/trainer_0",
        "blocks.24.hook_resid_post": "enc_res_out_layer_24_top_k_8192_25_1.0_HF_17414337/trainer_0",
    }


def test_internvl_release():
    release = get_release(INTERNVL)
    assert release.repo_id == "javifer/OpenGVLab_InternVL3-14B-saes"
    assert release.folder("blocks.18.hook_resid_post") == (
        "enc_res_out_layer_18_top_k_8192_25_1.0_HF_84890025/trainer_0"
    )
    assert release.folder("blocks.6.hook_resid_post").endswith("_28172052/trainer_0")
    assert release.folder("blocks.16.hook_resid_post").endswith("_33531160/trainer_0")


def test_sae_id_accepts_other_hook_conventions():
    release = get_release(GEMMA)
    assert (
        release.folder("vision_encoder.encoder_layers.16.hook_out")
        == release.saes["blocks.16.hook_resid_post"]
    )
    assert release.folder("model.vision_tower.encoder.layers.24") == release.saes["blocks.24.hook_resid_post"]


def test_unknown_sae_id_lists_valid_ids():
    with pytest.raises(UnknownVisionReleaseError, match="blocks.16.hook_resid_post") as info:
        get_release(GEMMA).folder("blocks.7.hook_resid_post")
    assert "blocks.7.hook_resid_post" in str(info.value)


def test_unknown_release_suggests_close_matches():
    with pytest.raises(KeyError) as info:
        get_release("gemma-3-4b-vision-topk-8192")
    message = str(info.value)
    assert f"Did you mean '{GEMMA}'" in message
    assert INTERNVL in message  # the full list of known releases


def test_list_vision_releases_has_one_row_per_sae():
    table = list_vision_releases()
    assert isinstance(table, pd.DataFrame)
    assert len(table) == 8
    saev = {"saev-clip-vit-b-16-imagenet1k", "saev-dinov2-vit-b-14-reg-imagenet1k"}
    assert set(table["release"]) == {GEMMA, INTERNVL} | saev
    gemma = table[table["release"] == GEMMA].set_index("sae_id")
    assert gemma.loc["blocks.24.hook_resid_post", "path"].endswith("_17414337/trainer_0")
    papers = table[table["release"].isin([GEMMA, INTERNVL])]
    assert (papers["format"] == "dictionary_learning").all()
    assert (papers["k"] == 25).all() and (papers["d_sae"] == 8192).all()
    assert (table[table["release"].isin(saev)]["format"] == "saev").all()
