"""The eleven MultiMed tasks and their public sources (facts from ``shared/reference/sources.md``)."""

from dataclasses import replace

from multimed_hf.tasks import ColumnSpec as C
from multimed_hf.tasks import LabelSpec, SourceSpec, TaskSpec, register_task

__all__: list[str] = []

IMAGE = C("image", "image", "the image, its original bytes embedded", modality="image")
MODALITY = C("modality", "string", "which imaging modality the image is (oct, fundus, xray, ct, mri, ...)")
PATIENT = C("patient_id", "string", "the publisher's patient id, where the source has one")

DR_GRADES = ("no_dr", "mild", "moderate", "severe", "proliferative")
BONE_AGE_BINS = (0.0, 60.0, 108.0, 144.0, 180.0)
BONE_AGE_BIN_NAMES = ("0-59", "60-107", "108-143", "144-179", "180+")

# --- sources --------------------------------------------------------------------------------------------------
BRAIN_TUMOR_MRI = SourceSpec(
    name="brain_tumor_mri",
    title="Brain Tumor MRI Dataset (Nickparvar, Kaggle)",
    modality="mri",
    organ="brain",
    citation=(
        "@misc{nickparvar2021braintumor, author={Msoud Nickparvar}, title={Brain Tumor MRI Dataset}, "
        "year={2021}, publisher={Kaggle}, doi={10.34740/KAGGLE/DSV/2645886}}"
    ),
    license="CC0-1.0",
    redistributable=True,
    homepage="https://www.kaggle.com/datasets/masoudnickparvar/brain-tumor-mri-dataset",
    layout=(
        "Training/ and Testing/, each with class folders glioma, meningioma, notumor, pituitary holding JPEG slices "
        "named like Tr-gl_0010.jpg / Te-me_0010.jpg"
    ),
    grouping=(
        "no patient ids exist (merged from figshare, SARTAJ and Br35H): exact and near-duplicate images are grouped, "
        "so patient-level disjointness cannot be guaranteed"
    ),
    expected_files={"Kaggle v1 (Training 5,712 + Testing 1,311)": 7023},
    label_map={"tumor": {
        "glioma": "glioma", "meningioma": "meningioma", "notumor": "no_tumor", "pituitary": "pituitary",
        # the SARTAJ release's folder names (sartajbhuvaji/brain-tumor-classification-mri), merged into this set
        "glioma_tumor": "glioma", "meningioma_tumor": "meningioma", "no_tumor": "no_tumor",
        "pituitary_tumor": "pituitary",
    }},
)

OCT2017 = SourceSpec(
    name="oct2017",
    title="Labeled OCT images (Kermany, Zhang, Goldbaum 2018), OCT2017",
    modality="oct",
    organ="eye",
    citation=(
        "@article{kermany2018identifying, title={Identifying Medical Diagnoses and Treatable Diseases by "
        "Image-Based Deep Learning}, author={Kermany, Daniel S. and Goldbaum, Michael and Cai, Wenjia and others}, "
        "journal={Cell}, volume={172}, number={5}, pages={1122--1131}, year={2018}, doi={10.1016/j.cell.2018.02.010}}"
    ),
    license="CC-BY-4.0",
    redistributable=True,
    homepage="https://data.mendeley.com/datasets/rscbjbr9sj",
    layout=(
        "OCT2017/{train,test[,val]}/{CNV,DME,DRUSEN,NORMAL}/CLASS-PATIENTID-N.jpeg (v2; the Kaggle mirror moves 32 "
        "test images into val/), or CellData/OCT/{train,test}/... (v3, a larger release; never mixed with v2)"
    ),
    grouping="patient id (the middle field of the file name); a patient can appear under two class folders",
    expected_files={"v2 (Mendeley v2 / Kaggle kermany2018)": 84484, "v3 (Mendeley v3, CellData/OCT)": 109309},
    label_map={"oct_finding": {"CNV": "cnv", "DME": "dme", "DRUSEN": "drusen", "NORMAL": "normal"}},
    notes=(
        "The authors call train and test patient-disjoint; a published re-analysis of v3 removed 3,663 training "
        "images (3.4%) of test patients. The published test set is kept; leaking training files are dropped."
    ),
)

KERMANY_CXR = SourceSpec(
    name="kermany_cxr",
    title="Chest X-Ray Images (Pneumonia), Kermany et al. 2018",
    modality="xray",
    organ="lung",
    citation=OCT2017.citation,
    license="CC-BY-4.0",
    redistributable=True,
    homepage="https://data.mendeley.com/datasets/rscbjbr9sj",
    layout=(
        "chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/; Kaggle names pneumonia files personN_bacteria_M.jpeg or "
        "personN_virus_M.jpeg and normal files IM-XXXX-YYYY.jpeg, NORMAL2-IM-XXXX-YYYY.jpeg or (133 in train) "
        "IM-XXXX-0001-000N.jpeg; Mendeley's release "
        "(train/ and test/ only) names them NORMAL|BACTERIA|VIRUS-<patient>-<n>.jpeg"
    ),
    grouping=(
        "patient id from the file name (personN; IM-XXXX, with NORMAL2-IM-XXXX read as the same patient; Mendeley's "
        "middle field)"
    ),
    expected_files={"Kaggle (train 5,216 / val 16 / test 624) or Mendeley (train 5,232 / test 624)": 5856},
    label_map={"finding": {"NORMAL": "normal", "bacteria": "bacterial_pneumonia", "virus": "viral_pneumonia"}},
    notes=(
        "Kaggle's val/ (16 images) is too small to validate on: it is training data, and validation is drawn from "
        "training patients. The published test set is kept; training files of test patients are dropped."
    ),
)

CC_CCII = SourceSpec(
    name="cc_ccii",
    title="CC-CCII, China Consortium of Chest CT Image Investigation (CNCB 2019nCoVR)",
    modality="ct",
    organ="lung",
    citation=(
        "@article{zhang2020clinically, title={Clinically Applicable AI System for Accurate Diagnosis, Quantitative "
        "Measurements, and Prognosis of COVID-19 Pneumonia Using Computed Tomography}, author={Zhang, Kang and "
        "Liu, Xiaohong and Shen, Jun and others}, journal={Cell}, volume={181}, number={6}, pages={1423--1433}, year={2020}}"
    ),
    license="CC-BY-3.0-CN",
    redistributable=True,
    homepage="http://ncov-ai.big.ac.cn/download",
    layout=(
        "{NCP,CP,Normal}/<patient_id>/<scan_id>/<slice>.png|jpg (the unpacked CP-*, NCP-* (hosted as COVID19-*) "
        "and Normal-* zips), beside unzip_filenames.csv (zip_file, label, patient_id, scan_id, n_slice), "
        "lesions_slices.csv and metadata.csv"
    ),
    grouping=(
        "patient id (a patient may have several scans); one id under two class folders is one group, since "
        "nothing shows the ids are numbered per class"
    ),
    expected_files={"full release (slices)": 617775},
    label_map={"finding": {"NCP": "novel_coronavirus_pneumonia", "CP": "common_pneumonia", "Normal": "normal"}},
    notes=(
        "Slices are the publisher's windowed images (window unknown); slice_index is the file's slice number. "
        "unzip_filenames.csv rows whose scan is missing (NCP-13.zip is reported broken), filed under another class "
        "or not n_slice slices are reported in the manifest; a scan filed under another class than its index row's "
        "has its slices rejected (label conflict). Near-duplicate hashing is off for this source: a "
        "scan's neighbouring slices are near duplicates by design (one group through the patient id anyway), and "
        "across patients a 64-bit hash of chest slices would chain unrelated scans together; exact duplicates "
        "still group, so a slice copied unchanged into another patient's folder joins its original's group, while "
        "a resized or re-encoded copy does not."
    ),
)

MOSMEDDATA = SourceSpec(
    name="mosmeddata",
    title="MosMedData: COVID19_1110 chest CT studies",
    modality="ct",
    organ="lung",
    citation=(
        "@article{morozov2020mosmeddata, title={MosMedData: Chest CT Scans With COVID-19 Related Findings Dataset}, "
        "author={Morozov, S. P. and Andreychenko, A. E. and Pavlov, N. A. and others}, journal={arXiv:2005.06465}, year={2020}}"
    ),
    license="CC-BY-NC-ND-3.0",
    redistributable=False,
    homepage="https://mosmed.ai/datasets/covid19_1110",
    layout=(
        "studies/CT-0 ... CT-4/study_NNNN.nii.gz, one volume per patient; masks/study_NNNN_mask.nii.gz "
        "(binary lesion masks of 50 CT-1 studies) and dataset_registry.xlsx beside them (in the archive's "
        "COVID19_1110/ folder, found under the folder given too)"
    ),
    grouping="patient (one study each)",
    expected_files={"COVID19_1110": 1110},
    label_map={"severity": {"CT-0": "ct0", "CT-1": "ct1", "CT-2": "ct2", "CT-3": "ct3", "CT-4": "ct4"}},
    notes=(
        "Non-commercial, no derivatives: builds locally as its own shards, left out of every push. Each volume is "
        "cut into axial slices stored as PNGs in the lung window (-600/1500 HU); slice_index is the slice's index "
        "along the file's own slice axis."
    ),
)

RADIOGRAPHIC_FINDINGS = (
    "normal", "bacterial_pneumonia", "viral_pneumonia", "novel_coronavirus_pneumonia", "common_pneumonia",
)
CT_SEVERITIES = ("ct0", "ct1", "ct2", "ct3", "ct4")

DICOM_SERIES = SourceSpec(
    name="dicom_series",
    title="Your own chest CT as DICOM series (user data)",
    modality="ct",
    citation=(
        "@misc{dicom, author={{NEMA PS3 / ISO 12052}}, title={Digital Imaging and Communications in Medicine "
        "(DICOM) Standard}, howpublished={\\url{https://www.dicomstandard.org/current}}}"
    ),
    license="user data (patient images: never pushed)",
    redistributable=False,
    homepage="https://www.dicomstandard.org/current",
    layout=(
        "<patient>/<study>/<series>/*.dcm under a root holding labels.csv with columns label and patient_id "
        "and/or series_uid (a series row wins over its patient's); labels are the task's finding or severity names"
    ),
    grouping="patient (the top folder's name)",
    label_map={"finding": {n: n for n in RADIOGRAPHIC_FINDINGS}, "severity": {n: n for n in CT_SEVERITIES}},
    notes=(
        "Each file is one slice, read with pydicom (compressed transfer syntaxes through pylibjpeg), turned into "
        "Hounsfield units through its modality LUT and stored as a PNG in the lung window (-600/1500 HU); "
        "slice_index is the rank along the slice normal (inferior to superior for axial series). User data builds "
        "locally and is left out of every push."
    ),
)

RSNA_BONE_AGE = SourceSpec(
    name="rsna_bone_age",
    title="RSNA Pediatric Bone Age Challenge 2017",
    modality="xray",
    citation=(
        "@article{halabi2019rsna, title={The RSNA Pediatric Bone Age Machine Learning Challenge}, author={Halabi, "
        "Safwan S. and Prevedello, Luciano M. and Kalpathy-Cramer, Jayashree and others}, journal={Radiology}, "
        "volume={290}, number={2}, pages={498--503}, year={2019}}"
    ),
    license="research use (Stanford AIMI registration); redistribution not granted",
    redistributable=False,
    homepage="https://www.rsna.org/rsnai/ai-image-challenge/rsna-pediatric-bone-age-challenge-2017",
    layout=(
        "boneage-training-dataset.csv (id, boneage in months, male True/False) beside the folder of PNGs named "
        "<id>.png (Kaggle nests it: boneage-training-dataset/boneage-training-dataset/); the challenge's other "
        "sheets are recognised by header: validation (Image ID, male, Bone Age (months)), test ground truth "
        "(Case ID, Sex, Ground truth bone age (months)), and Kaggle's boneage-test-dataset.csv (Case ID, Sex) whose "
        "200 images carry no age. Sheets may be CSV or Excel (.xlsx), found down to two folders below the root. A "
        "sheet indexes the folder named like it, else its own folder; a sheet alone in a folder of its own (the "
        "Stanford AIMI Box download's Bone+Age+Training+Set+Annotations/train.csv) indexes the folder above"
    ),
    grouping="image id (one image per child; no patient ids exist)",
    expected_files={
        "Kaggle mirror (training 12,611 + test 200 PNGs, 2 sheets)": 12813,
        "training set alone (12,611 PNGs + sheet)": 12612,
        "all three challenge sets (PNGs only)": 14236,
    },
    notes=(
        "bone_age_bin is computed from bone_age_months with the task's bin edges. The validation sheet is training "
        "data here; the test ground truth (the challenge's Excel sheet, read with openpyxl: pip install "
        "multimed_hf[tables]; or a CSV copy beside it) is the published test set. Kaggle's test images "
        "have no age and are reported as unlabelled. Without a labelled test sheet the test split is drawn by image."
    ),
)

BREAKHIS = SourceSpec(
    name="breakhis",
    title="BreakHis v1 breast cancer histopathology",
    modality="pathology",
    organ="breast",
    citation=(
        "@article{spanhol2016dataset, title={A Dataset for Breast Cancer Histopathological Image Classification}, "
        "author={Spanhol, Fabio A. and Oliveira, Luiz S. and Petitjean, Caroline and Heutte, Laurent}, "
        "journal={IEEE Transactions on Biomedical Engineering}, volume={63}, number={7}, pages={1455--1462}, year={2016}}"
    ),
    license="free for research; cite Spanhol 2016; redistribution not granted",
    redistributable=False,
    homepage="https://web.inf.ufpr.br/vri/databases/breast-cancer-histopathological-database-breakhis/",
    layout=(
        "BreaKHis_v1/histology_slides/breast/{benign,malignant}/SOB/<subtype>/SOB_B_A_14-22549AB/"
        "{40X,100X,200X,400X}/SOB_B_A-14-22549AB-40-001.png"
    ),
    grouping=(
        "patient: the 14-22549 part of the folder name, slide letters dropped (14-22549AB, 14-22549CD and "
        "14-22549G are one group), so patient 14-13412, filed under both ductal and lobular carcinoma, is one group"
    ),
    expected_files={"v1": 7909},
    notes=(
        "The file name repeats the class letter (B/M), subtype letters, patient and magnification of its folders; "
        "a file whose name disagrees with its folders is rejected. patient_id keeps the folder's id as published. "
        "Identical images filed under two subtypes are rejected as label conflicts."
    ),
    label_map={
        "malignancy": {"benign": "benign", "malignant": "malignant"},
        "subtype": {
            "adenosis": "adenosis", "fibroadenoma": "fibroadenoma", "phyllodes_tumor": "phyllodes_tumor",
            "tubular_adenoma": "tubular_adenoma", "ductal_carcinoma": "ductal_carcinoma",
            "lobular_carcinoma": "lobular_carcinoma", "mucinous_carcinoma": "mucinous_carcinoma",
            "papillary_carcinoma": "papillary_carcinoma",
        },
    },
)

CBIS_DDSM = SourceSpec(
    name="cbis_ddsm",
    title="CBIS-DDSM: Curated Breast Imaging Subset of DDSM (TCIA)",
    modality="mammography",
    organ="breast",
    citation=(
        "@article{lee2017curated, title={A curated mammography data set for use in computer-aided detection and "
        "diagnosis research}, author={Lee, Rebecca Sawyer and Gimenez, Francisco and Hoogi, Assaf and Miyake, "
        "Kanae Kawai and Gorovoy, Mia and Rubin, Daniel L.}, journal={Scientific Data}, volume={4}, "
        "pages={170177}, year={2017}, doi={10.1038/sdata.2017.177}}"
    ),
    license="CC-BY-3.0",
    redistributable=True,
    homepage="https://doi.org/10.7937/K9/TCIA.2016.7O02S9CY",
    layout=(
        "CBIS-DDSM/<Mass|Calc>-<Training|Test>_P_<id>_<LEFT|RIGHT>_<CC|MLO>/<study>/<series>/*.dcm (NBIA download; "
        "folders ending _<n> hold ROI masks and crops) beside {mass,calc}_case_description_{train,test}_set.csv; "
        "the NBIA Data Retriever may put CBIS-DDSM/ and metadata.csv in a download folder of its own "
        "(manifest-<id>/), and the CSVs may sit at the root, beside CBIS-DDSM/ or inside it"
    ),
    grouping="patient (P_xxxxx; a patient can be in the mass and the calc sets)",
    expected_files={"full mammograms": 3103},
    # the CSVs' pathology names; a mammogram is malignant when any of its abnormalities is
    label_map={"malignancy": {"MALIGNANT": "malignant", "BENIGN": "benign", "BENIGN_WITHOUT_CALLBACK": "benign"}},
    notes=(
        "One sample per full mammogram, a 16-bit grey PNG of the stored pixel values (MONOCHROME1 inverted, "
        "no display window applied); malignant when any of its "
        "abnormalities is MALIGNANT (BENIGN_WITHOUT_CALLBACK is benign); ROI masks and crops are dropped as not "
        "used. CSV rows join the NBIA tree by their path's first folder, since the CSV paths do not match it. "
        "Near-duplicate hashing is off for this source (exact duplicates and the patient id group its images)."
    ),
)

APTOS2019 = SourceSpec(
    name="aptos2019",
    title="APTOS 2019 Blindness Detection",
    modality="fundus",
    organ="eye",
    citation="@misc{aptos2019, title={APTOS 2019 Blindness Detection}, howpublished={Kaggle}, year={2019}}",
    license="Kaggle competition rules; redistribution not granted",
    redistributable=False,
    homepage="https://www.kaggle.com/competitions/aptos2019-blindness-detection",
    layout=(
        "train.csv (id_code, diagnosis 0-4) with train_images/<id_code>.png; test.csv (id_code) with "
        "test_images/<id_code>.png and sample_submission.csv (a template)"
    ),
    grouping="image (no patient ids; exact and near-duplicate images grouped)",
    expected_files={
        "Kaggle competition (3,662 train + 1,928 test PNGs, 3 sheets)": 5593,
        "training set alone (3,662 PNGs + train.csv)": 3663,
    },
    notes=(
        "The test images have no public grades: they are reported as unlabelled, and the test split is drawn from "
        "the training images. Exact duplicates graded differently are rejected as label conflicts."
    ),
    label_map={"dr_grade": {"0": "no_dr", "1": "mild", "2": "moderate", "3": "severe", "4": "proliferative"}},
)

EYEPACS = SourceSpec(
    name="eyepacs",
    title="Kaggle Diabetic Retinopathy Detection 2015 (EyePACS)",
    modality="fundus",
    organ="eye",
    citation=(
        "@misc{eyepacs2015, title={Diabetic Retinopathy Detection}, author={Cuadros, Jorge and Bresnick, George}, "
        "howpublished={Kaggle}, year={2015}}"
    ),
    license="Kaggle competition rules; redistribution not granted",
    redistributable=False,
    homepage="https://www.kaggle.com/competitions/diabetic-retinopathy-detection",
    layout=(
        "trainLabels.csv (image, level 0-4) with train/<patient>_{left,right}.jpeg; test/ with the same names, "
        "labelled by retinopathy_solution.csv (image, level, Usage) where supplied; sampleSubmission.csv (a template)"
    ),
    grouping="patient (the numeric prefix: both eyes together)",
    expected_files={
        "train + test with the solution (88,702 JPEGs, 3 sheets)": 88705,
        "training set alone (35,126 JPEGs + trainLabels.csv)": 35127,
        "train + test JPEGs (88,702)": 88702,
        "training JPEGs (35,126)": 35126,
    },
    notes=(
        "With retinopathy_solution.csv the test images are the published test set (public and private parts "
        "together); without it they are reported as unlabelled and the test split is drawn from training patients."
    ),
    label_map=APTOS2019.label_map,
)

MALARIA = SourceSpec(
    name="lhncbc_malaria",
    title="NIH/NLM LHNCBC Malaria cell images",
    modality="pathology",
    organ="blood",
    citation=(
        "@article{rajaraman2018pre, title={Pre-trained convolutional neural networks as feature extractors toward "
        "improved malaria parasite detection in thin blood smear images}, author={Rajaraman, Sivaramakrishnan and "
        "Antani, Sameer K. and Poostchi, Mahdieh and others}, journal={PeerJ}, volume={6}, pages={e4568}, year={2018}}"
    ),
    license="public NLM download, no explicit licence (cite the PeerJ paper)",
    redistributable=True,
    homepage="https://lhncbc.nlm.nih.gov/LHC-research/LHC-projects/image-processing/malaria-datasheet.html",
    layout=(
        "cell_images/{Parasitized,Uninfected}/<slide>ThinF_IMG_<date>_<time>_cell_<n>.png (plus a Thumbs.db per "
        "folder, ignored; the Kaggle mirror's nested cell_images/ copy dropped; NLM's patientid_cellmapping_*.csv "
        "dropped by name where kept beside the images)"
    ),
    grouping=(
        "patient: the slide code C<n>[P<m>] that starts the name (a smear's photographed fields together), slides "
        "sharing a C or P number joined"
    ),
    expected_files={"cell_images.zip (27,558 PNGs + 2 Thumbs.db)": 27560, "cell_images (27,558 PNGs)": 27558},
    notes=(
        "diseases is [malaria] or [normal]; label_mask lists both, every other disease is unknown, never negative. "
        "Cell crops all look alike, so near-duplicate hashing is off for this source (exact duplicates still group). "
        "NLM's patientid_cellmapping_*.csv (a separate download) is not read: its patient ids are the slide codes "
        "that start the cell names; where present it is dropped by name."
    ),
    label_map={"diseases": {"Parasitized": "malaria", "Uninfected": "normal"}},
)

SYMPTOM2DISEASE = SourceSpec(
    name="symptom2disease",
    title="Symptom2Disease: patient-style symptom descriptions labelled with 24 diagnoses (Kaggle)",
    modality="text",
    organ=None,  # clinical text of many conditions: no one organ
    citation=(
        "@misc{symptom2disease, author={niyarrbarman (Kaggle user)}, title={Symptom2Disease}, "
        "publisher={Kaggle}, howpublished={\\url{https://www.kaggle.com/datasets/niyarrbarman/symptom2disease}}}"
    ),
    license="as stated on the Kaggle dataset page (not checked here); redistribution not assumed",
    redistributable=False,
    homepage="https://www.kaggle.com/datasets/niyarrbarman/symptom2disease",
    layout="Symptom2Disease.csv: an unnamed index column, label (24 diagnoses, 50 texts each) and text",
    grouping="record (no patient ids); identical texts grouped",
    label_map={"diseases": {
        "Malaria": "malaria", "Pneumonia": "pneumonia", "Acne": "acne", "allergy": "allergy",
        "Arthritis": "arthritis", "Bronchial Asthma": "bronchial_asthma", "Cervical spondylosis": "cervical_spondylosis",
        "Chicken pox": "chicken_pox", "Common Cold": "common_cold", "Dengue": "dengue", "diabetes": "diabetes",
        "drug reaction": "drug_reaction", "Fungal infection": "fungal_infection",
        "gastroesophageal reflux disease": "gerd", "Dimorphic Hemorrhoids": "hemorrhoids",
        "Hypertension": "hypertension", "Impetigo": "impetigo", "Jaundice": "jaundice", "Migraine": "migraine",
        "peptic ulcer disease": "peptic_ulcer", "Psoriasis": "psoriasis", "Typhoid": "typhoid",
        "urinary tract infection": "urinary_tract_infection", "Varicose Veins": "varicose_veins",
    }},
    notes=(
        "One sample per row: the text is the clinical note, diseases its one diagnosis, label_mask the 24 names "
        "this source can assert. Its Pneumonia is unspecified (not bacterial or viral). Rows with an unknown label "
        "or no text are reported as <file>:row <n>; identical texts with different labels are rejected."
    ),
)

EEGMMIDB = SourceSpec(
    name="eegmmidb",
    title="PhysioNet EEG Motor Movement/Imagery Dataset",
    modality="eeg",
    citation=(
        "@article{schalk2004bci2000, title={BCI2000: a general-purpose brain-computer interface (BCI) system}, "
        "author={Schalk, Gerwin and McFarland, Dennis J. and Hinterberger, Thilo and Birbaumer, Niels and Wolpaw, "
        "Jonathan R.}, journal={IEEE Transactions on Biomedical Engineering}, volume={51}, number={6}, pages={1034--1043}, year={2004}}\n"
        "@article{goldberger2000physiobank, title={PhysioBank, PhysioToolkit, and PhysioNet: components of a new "
        "research resource for complex physiologic signals}, author={Goldberger, Ary L. and Amaral, Luis A. N. and "
        "Glass, Leon and Hausdorff, Jeffrey M. and Ivanov, Plamen Ch. and Mark, Roger G. and Mietus, Joseph E. and "
        "Moody, George B. and Peng, Chung-Kang and Stanley, H. Eugene}, journal={Circulation}, volume={101}, "
        "number={23}, pages={e215--e220}, year={2000}}"
    ),
    license="ODC-BY-1.0 (PhysioNet open access)",
    redistributable=True,
    homepage="https://physionet.org/content/eegmmidb/1.0.0/",
    layout=(
        "[files/]S001/S001R01.edf ... S109/S109R14.edf, or files/eegmmidb/1.0.0/S001/... as MNE's eegbci.load_data "
        "and wget -r leave them (EDF+, 64 channels, 160 Hz, T0/T1/T2 annotations; .edf.event copies and RECORDS "
        "beside them; wget's index.html listings ignored); or OpenNeuro's BIDS copy ds004362 (CC0): "
        "sub-001/eeg/sub-001_task-motion_run-4_eeg.set (EEGLAB) with its _events.tsv (TASK2T0/T1/T2, TASK4T0/T1/T2) "
        "and PhysioNet's EDF+ under sourcedata/rawdata/ (read where whole, the .set then dropped as a copy); imagery "
        "runs 4, 8, 12 (T1 left fist, T2 right fist) and 6, 10, 14 (T1 both fists, T2 both feet), T0 rest"
    ),
    grouping="subject (cross-subject splits); within_subject_split gives runs 4, 6, 8, 10 train and 12, 14 test",
    expected_files={"v1.0.0 (EDF runs)": 1526,
                    "v1.0.0 zip as unpacked (1,526 EDF + 1,526 .edf.event + 7 documents)": 3059,
                    "ds004362 1.0.0 (OpenNeuro BIDS, with sourcedata)": 12221},
    label_map={"movement": {
        "rest": "rest", "left fist": "left_hand", "right fist": "right_hand", "both fists": "both_fists",
        "both feet": "both_feet",
    }},
    notes=(
        "One sample per cue of an imagery run: 3 s from the cue onset (MOABB's PhysionetMI window), every channel, "
        "float32 volts, channel names standardised as MNE's eegbci.standardize does. Baseline and motor-execution "
        "runs are listed as not used. Subjects 88, 92 and 100 were recorded at 128 Hz; sfreq is kept per sample."
    ),
)

BCI_IV_2A = SourceSpec(
    name="bci_iv_2a",
    title="BCI Competition IV dataset 2a",
    modality="eeg",
    citation=(
        "@techreport{brunner2008bci, title={BCI Competition 2008 -- Graz data set A}, author={Brunner, Clemens and "
        "Leeb, Robert and M{\\\"u}ller-Putz, Gernot and Schl{\\\"o}gl, Alois and Pfurtscheller, Gert}, year={2008}}"
    ),
    license="BNCI Horizon terms (research use, cite)",
    redistributable=False,
    homepage="https://www.bbci.de/competition/iv/",
    layout=(
        "A01T.gdf ... A09E.gdf (GDF, 22 EEG + 3 EOG channels at 250 Hz; events 32766 new run, 768 trial start, "
        "769-772 cues left hand / right hand / feet / tongue in the T sessions, 783 unknown cue in the E sessions) "
        "with the organisers' true labels A0NE.mat (classlabel 1-4): true_labels.zip as downloaded (read in place), "
        "or its files unpacked beside them or in a sub-folder; or BNCI Horizon's MATLAB copies A01T.mat ... A09E.mat "
        "(data: runs of X / trial / y / fs) as MOABB's BNCI2014_001 caches them in "
        "MNE-bnci-data/database/data-sets/001-2014/"
    ),
    grouping="subject (cross-subject splits); within_subject_split is the competition's T train / E test",
    expected_files={
        "9 subjects x 2 sessions": 18,
        "with true_labels.zip as downloaded": 19,
        "with true_labels unpacked (18 .mat)": 36,
    },
    label_map={"movement": {"769": "left_hand", "770": "right_hand", "771": "both_feet", "772": "tongue"}},
    notes=(
        "One sample per cue: 4 s from the cue (MOABB's BNCI2014_001 window, 2-6 s of the trial), the 22 EEG "
        "channels with 10-10 names (EOG left out), float32 volts. E sessions take their classes from A0NE.mat; "
        "one without it is rejected, unless BNCI Horizon's copy of it (whose y holds the classes) is there. The "
        "copies give the same samples as the GDF route; a session present both ways is read from its GDF. Trials the organisers marked as artefacts (1023) are kept, as MOABB does."
    ),
)

PBMC68K_REDUCED = SourceSpec(
    name="pbmc68k_reduced",
    title="scanpy's pbmc68k_reduced (a subsample of Zheng et al. 2017 68k PBMCs)",
    modality="scrna",
    citation=(
        "@article{zheng2017massively, title={Massively parallel digital transcriptional profiling of single cells}, "
        "author={Zheng, Grace X. Y. and Terry, Jessica M. and Belgrader, Phillip and others}, journal={Nature "
        "Communications}, volume={8}, pages={14049}, year={2017}}"
    ),
    license="CC-BY-4.0 (10x Genomics data); BSD-3-Clause (scanpy)",
    redistributable=True,
    licensed_files=("*pbmc68k_reduced*.h5ad",),  # as the builder detects scanpy's file (10x_pbmc68k_reduced.h5ad)
    homepage="https://scanpy.readthedocs.io/en/stable/generated/scanpy.datasets.pbmc68k_reduced.html",
    organ="blood",  # peripheral blood mononuclear cells; a file of the folder with an organ column says its own
    layout=(
        "a folder holding scanpy's 10x_pbmc68k_reduced.h5ad (700 cells x 765 genes; obs['bulk_labels'] cell types, "
        "log-normalised values in .raw) and optionally further .h5ad files (obs: a cell-type column such as "
        "cell_type or bulk_labels; donor_id, tissue, organ where known)"
    ),
    grouping=(
        "donor where obs has a donor column; pbmc68k_reduced has none (one donor, Zheng et al. 2017), so its "
        "cells are split one by one: donor-level disjointness cannot be guaranteed for it"
    ),
    notes=(
        "Values are the least processed matrix each file has (layers['counts'], else .raw.X, else X; the "
        "expression_matrix column says which); files with only scaled (negative) values are rejected. Each cell "
        "keeps its non-zero genes as indices into its file's gene panel; the panels' gene lists are in the "
        "source's gene_panels.json beside its shards, keyed by the gene_panel id. A cell whose label is missing is "
        "kept with cell_type None: counted among the samples, scored by no metric."
    ),
)

CELLXGENE = SourceSpec(
    name="cellxgene",
    title="CELLxGENE-schema AnnData files (CZ CELLxGENE Discover / Census downloads, or any such .h5ad)",
    modality="scrna",
    age=(
        "obs development_stage (the schema's HsapDv stage label for human donors: 'N-year-old [human] stage' is "
        "read as N years; broader stages such as 'adult stage' or decades give no age)"
    ),
    citation=(
        "@article{czi2025cellxgene, title={CZ CELLxGENE Discover: a single-cell data platform for scalable "
        "exploration, analysis and modeling of aggregated data}, author={{CZI Cell Science Program} and Abdulla, "
        "Shibla and Aevermann, Brian and others}, journal={Nucleic Acids Research}, volume={53}, number={D1}, "
        "pages={D886--D900}, year={2025}}"
    ),
    license="per dataset (most CELLxGENE datasets are CC-BY-4.0; check each collection)",
    redistributable=False,
    homepage="https://cellxgene.cziscience.com/datasets",
    layout=(
        "a folder of .h5ad files in the CELLxGENE schema (obs cell_type, cell_type_ontology_term_id, donor_id, "
        "tissue, assay, disease; var indexed by Ensembl id (ERCC spike-ins beside them) with feature_name, or by row "
        "number with feature_id as Census's get_anndata writes them; raw counts in raw.X or X), or scanpy-style "
        "files (obs celltype / cell_ontology_class ..., donor / individual ...; var gene_ids)"
    ),
    grouping="donor (donor_id; across the folder's files)",
    notes=(
        "Files are read backed (anndata backed='r') in row chunks, so a file larger than memory is never loaded "
        "whole. Genes are keyed by Ensembl id (feature_name kept as the name); the panel is the union of the "
        "files' genes (policy, names and each file's detected normalisation in gene_panels.json beside the "
        "shards); expression_matrix names the matrix stored and its normalisation (raw counts or "
        "log1p-normalised). Not redistributed: each collection keeps its own terms."
    ),
)

SC_EXPRESSION_ATLAS = SourceSpec(
    name="sc_expression_atlas",
    title="EMBL-EBI Single Cell Expression Atlas",
    modality="scrna",
    citation=(
        "@article{moreno2022expression, title={Expression Atlas update: gene and protein expression in multiple "
        "species}, author={Moreno, Pablo and Fexova, Silvie and George, Nancy and others}, journal={Nucleic Acids "
        "Research}, volume={50}, number={D1}, pages={D129--D140}, year={2022}}"
    ),
    license="EMBL-EBI terms; each study keeps its original terms",
    redistributable=True,
    homepage="https://www.ebi.ac.uk/gxa/sc/home",
    layout=".h5ad per experiment (or MatrixMarket + ExpDesign-<acc>.tsv)",
    grouping="donor / individual",
)

TCGA_XENA = SourceSpec(
    name="tcga_promoters",
    title="Promoter windows (genome FASTA + TSS) paired with TCGA / Expression Atlas expression",
    modality="dna",
    citation=(
        "@article{agarwal2020predicting, title={Predicting mRNA Abundance Directly from Genomic Sequence Using Deep "
        "Convolutional Neural Networks}, author={Agarwal, Vikram and Shendure, Jay}, journal={Cell Reports}, "
        "volume={31}, number={7}, pages={107663}, year={2020}}"
    ),
    license=("the expression table's own terms (TCGA open tier: NIH GDC terms; Expression Atlas: EMBL-EBI terms, "
             "each study its own); genome FASTA public; an .h5ad's cells their own terms"),
    redistributable=True,
    own_terms_files=("*.h5ad",),  # the user's cells: the rows' profiles are their data
    homepage="https://xenabrowser.net/datapages/?hub=https://pancanatlas.xenahubs.net",
    layout=(
        "promoters.fa (10,500-nt windows, 7,000 nt upstream to 3,500 nt downstream of each TSS, headers as bedtools "
        "getfasta -name -s writes them: GENE::chr1:4869-15369(+)) + expression.tsv (gene id, then one column of "
        "log-scale expression per context: a per-sample table such as Xena's PanCan one averaged per cancer type or "
        "tissue first) + optionally contexts.tsv (columns context, organ: each context's organ, "
        "as GTEx's sample attributes give the organ SMTS of each tissue SMTSD) + optionally one .h5ad of cells "
        "whose cell types name contexts"
    ),
    grouping="gene; whole chromosomes (chr8, chr9) held out for test, the rest train (validation from training genes)",
    notes=(
        "One sample per (gene, context). Contexts that are cell types of the h5ad carry its pseudo-bulk profile "
        "(log1p of the mean CP10k expression) with the target gene masked; the profile's gene list is in the "
        "source's gene_panels.json beside its shards. Windows with letters other than A/C/G/T/N, another "
        "length, no chromosome or no expression row are reported per record. TCGA asks for this acknowledgement: "
        "\"The results shown here are in whole or part based upon data generated by the TCGA Research Network: "
        "https://www.cancer.gov/tcga.\""
    ),
)

RCSB_PDB = SourceSpec(
    name="rcsb_pdb",
    title="RCSB Protein Data Bank (PDB / mmCIF entries)",
    modality="protein",
    citation=(
        "@article{berman2000protein, title={The Protein Data Bank}, author={Berman, Helen M. and Westbrook, John "
        "and Feng, Zukang and others}, journal={Nucleic Acids Research}, volume={28}, number={1}, pages={235--242}, year={2000}}"
    ),
    license="CC0-1.0",
    redistributable=True,
    homepage="https://www.rcsb.org/",
    layout=(
        "a folder (flat, or one level of sub-folders as rsync mirrors use) of PDB entries as <id>.pdb, pdb<id>.ent or "
        "<id>.cif, gzipped or not, optionally "
        "with one RCSB sequence-cluster file beside them (clusters-by-entity-NN.txt, or the older bc-NN.out)"
    ),
    grouping=(
        "sequence group: RCSB's clusters where a cluster file is supplied; otherwise (and for chains it does not "
        "list) identical and >= 90%-identical chains (identities over the shorter chain, k-mer prefilter + "
        "Biopython PairwiseAligner)"
    ),
    notes=(
        "One sample per protein chain of the first model. Residues the entry records as unobserved (REMARK 465, "
        "_pdbx_unobs_or_zero_occ_residues) stay in the sequence at their author numbers with residue_mask 0 and "
        "coordinates 0; nothing is shifted. Modified residues take their parent's letter (else X) and are listed "
        "in nonstandard_residues. Chains with no C-alpha atom, peptides under 10 residues and chains with an "
        "unrecorded break (consecutive C-alpha atoms over 4.2 A apart) are reported in the manifest and left out."
    ),
)

VQA_RAD = SourceSpec(
    name="vqa_rad",
    title="VQA-RAD (Lau et al. 2018)",
    modality="xray",
    citation=(
        "@article{lau2018dataset, title={A dataset of clinically generated visual questions and answers about "
        "radiology images}, author={Lau, Jason J. and Gayen, Soumya and Ben Abacha, Asma and Demner-Fushman, Dina}, "
        "journal={Scientific Data}, volume={5}, pages={180251}, year={2018}}"
    ),
    license="CC0-1.0",
    redistributable=True,
    homepage="https://osf.io/89kps/",
    layout=(
        "VQA_RAD Dataset Public.json (qid, image_name, question, answer, answer_type CLOSED/OPEN, phrase_type, "
        "question_type, image_organ; .xlsx and .xml copies beside it) + VQA_RAD Image Folder/synpicNNNN.jpg"
    ),
    grouping="image (all questions on one image together; exact and near-duplicate images grouped too)",
    expected_files={"315 images + the JSON": 316},
    notes=(
        "2,248 QA pairs on 315 images: the JSON's free-form and paraphrased questions, one sample each (the paper's "
        "3,515 adds 1,267 framed questions, which the JSON keeps in question_frame and the build does not read). "
        "Test questions are phrase_type test_freeform / test_para; the publisher "
        "split by question, so training questions on test images are dropped and reported. The JSON records the "
        "organ, not the modality: CHEST is read as X-ray, ABD as CT, HEAD from the image's modality questions "
        "(MRI where none says)."
    ),
)

SLAKE = SourceSpec(
    name="slake",
    title="SLAKE (Liu et al. 2021)",
    modality="ct",
    citation=(
        "@inproceedings{liu2021slake, title={SLAKE: A Semantically-Labeled Knowledge-Enhanced Dataset for Medical "
        "Visual Question Answering}, author={Liu, Bo and Zhan, Li-Ming and Xu, Li and others}, booktitle={ISBI}, year={2021}}"
    ),
    license="CC-BY-4.0",
    redistributable=True,
    homepage="https://www.med-vqa.com/slake/",
    layout=(
        "imgs/xmlabN/source.jpg (with mask.png and detection.json beside it) + train.json, validate.json, "
        "test.json (qid, img_id, img_name xmlabN/source.jpg, question, answer, answer_type, q_lang en/zh, "
        "modality, location, content_type)"
    ),
    grouping="image (all questions on one image together; exact and near-duplicate images grouped too)",
    expected_files={"642 images + 3 JSON": 645},
    notes=(
        "English and Chinese questions are both kept (the language column tells them apart). validate.json "
        "(validation.json in some copies) is read as training data; validation is drawn from training images."
    ),
)

# --- tasks ----------------------------------------------------------------------------------------------------
DISEASES = (
    "normal", "bacterial_pneumonia", "viral_pneumonia", "novel_coronavirus_pneumonia", "common_pneumonia",
    "glioma", "meningioma", "pituitary_tumor", "cnv", "dme", "drusen", "diabetic_retinopathy",
    "breast_benign", "breast_malignant", "malaria",
    # Symptom2Disease's clinical-text diagnoses (appended: the names above keep their indices)
    "pneumonia", "acne", "allergy", "arthritis", "bronchial_asthma", "cervical_spondylosis", "chicken_pox",
    "common_cold", "dengue", "diabetes", "drug_reaction", "fungal_infection", "gerd", "hemorrhoids",
    "hypertension", "impetigo", "jaundice", "migraine", "peptic_ulcer", "psoriasis", "typhoid",
    "urinary_tract_infection", "varicose_veins",
)



def _as_disease_source(source: SourceSpec, diseases: dict[str, str]) -> SourceSpec:
    """``source`` as a source of the disease config: its own canonical labels mapped to harmonised disease names
    (the keys are the labels of the source's own task, e.g. brain_tumor's ``no_tumor``)."""
    return replace(source, label_map={"diseases": diseases})


#: The imaging sources of the other tasks, read again for the disease config (TorchXRayVision-style relabelling).
DISEASE_IMAGING_SOURCES = (
    _as_disease_source(BRAIN_TUMOR_MRI, {
        "glioma": "glioma", "meningioma": "meningioma", "pituitary": "pituitary_tumor", "no_tumor": "normal",
    }),
    _as_disease_source(OCT2017, {"cnv": "cnv", "dme": "dme", "drusen": "drusen", "normal": "normal"}),
    _as_disease_source(KERMANY_CXR, {
        "normal": "normal", "bacterial_pneumonia": "bacterial_pneumonia", "viral_pneumonia": "viral_pneumonia",
    }),
    _as_disease_source(CC_CCII, {
        "normal": "normal", "novel_coronavirus_pneumonia": "novel_coronavirus_pneumonia",
        "common_pneumonia": "common_pneumonia",
    }),
    # MosMedData is a COVID-19 cohort: CT-0 has no findings, CT-1..CT-4 are COVID-19 pneumonia of rising extent
    _as_disease_source(MOSMEDDATA, {
        "ct0": "normal", "ct1": "novel_coronavirus_pneumonia", "ct2": "novel_coronavirus_pneumonia",
        "ct3": "novel_coronavirus_pneumonia", "ct4": "novel_coronavirus_pneumonia",
    }),
    _as_disease_source(BREAKHIS, {"benign": "breast_benign", "malignant": "breast_malignant"}),
    _as_disease_source(APTOS2019, {
        "no_dr": "normal", "mild": "diabetic_retinopathy", "moderate": "diabetic_retinopathy",
        "severe": "diabetic_retinopathy", "proliferative": "diabetic_retinopathy",
    }),
    _as_disease_source(EYEPACS, {
        "no_dr": "normal", "mild": "diabetic_retinopathy", "moderate": "diabetic_retinopathy",
        "severe": "diabetic_retinopathy", "proliferative": "diabetic_retinopathy",
    }),
)

register_task(TaskSpec(
    name="disease",
    title="Disease classification",
    sample=("one record of one source, with the modalities it has (X-ray, CT slice, MRI, OCT, fundus photograph, "
            "histopathology or malaria cell image, clinical note)"),
    modalities=("xray", "ct", "mri", "oct", "fundus", "pathology", "text"),
    problem_type="multi_label_classification",
    labels=(LabelSpec("diseases", "multilabel", DISEASES, "harmonised disease names present in the record"),),
    metrics=("accuracy", "macro_auroc"),
    grouping_key="the source's patient / slide / duplicate group",
    inputs=(IMAGE, C("text", "string", "clinical note, where the record has one", modality="text"), MODALITY),
    metadata=(
        C("label_mask", "list_string", "the harmonised names this source can assert; the rest are unknown"), PATIENT,
        C("organ", "string", "the organ the record shows, as the registry states it for its source "
          "(SourceSpec.organ); None where the source states none (clinical text)"),
    ),
    sources=(MALARIA, SYMPTOM2DISEASE, *DISEASE_IMAGING_SOURCES),
    notes=(
        "Unknown labels stay missing, never negative (TorchXRayVision's convention): label_mask lists the names a "
        "record's source can assert. The imaging sources of the other tasks are read again here, their labels "
        "mapped to the harmonised names; their groups and publisher test sets are the same as in their own configs."
    ),
))

register_task(TaskSpec(
    name="brain_tumor",
    title="Brain tumour classification (MRI)",
    sample="one MRI slice (JPEG)",
    modalities=("mri",),
    problem_type="single_label_classification",
    labels=(LabelSpec("tumor", "class", ("glioma", "meningioma", "no_tumor", "pituitary")),),
    metrics=("accuracy", "macro_f1"),
    grouping_key="exact / near-duplicate group (no patient ids exist)",
    inputs=(IMAGE, MODALITY),
    sources=(BRAIN_TUMOR_MRI,),
    notes="Patient-level disjointness cannot be guaranteed: the source keeps no patient ids.",
))

register_task(TaskSpec(
    name="breast_cancer",
    title="Breast cancer classification (histopathology, mammography)",
    sample="one histopathology image with its magnification; a mammogram where supplied",
    modalities=("pathology", "mammography"),
    problem_type="single_label_classification",
    labels=(
        LabelSpec("malignancy", "class", ("benign", "malignant")),
        LabelSpec("subtype", "class", (
            "adenosis", "fibroadenoma", "phyllodes_tumor", "tubular_adenoma",
            "ductal_carcinoma", "lobular_carcinoma", "mucinous_carcinoma", "papillary_carcinoma",
        ), parent_label="malignancy", parent_of=(
            ("adenosis", "benign"), ("fibroadenoma", "benign"), ("phyllodes_tumor", "benign"),
            ("tubular_adenoma", "benign"), ("ductal_carcinoma", "malignant"), ("lobular_carcinoma", "malignant"),
            ("mucinous_carcinoma", "malignant"), ("papillary_carcinoma", "malignant"),
        )),
    ),
    metrics=("accuracy", "macro_f1"),
    grouping_key="patient",
    inputs=(IMAGE, MODALITY, C("magnification", "string", "40X / 100X / 200X / 400X for histopathology")),
    metadata=(PATIENT,),
    sources=(BREAKHIS, CBIS_DDSM),
))

register_task(TaskSpec(
    name="radiographic_findings",
    title="Radiographic findings (chest X-ray and CT)",
    sample="one chest X-ray, or one CT slice with its volume id, slice index and window",
    modalities=("xray", "ct"),
    problem_type="single_label_classification",
    labels=(
        LabelSpec("finding", "class", RADIOGRAPHIC_FINDINGS),
        LabelSpec("severity", "class", CT_SEVERITIES, "MosMedData severity CT-0 .. CT-4"),
    ),
    metrics=("accuracy", "macro_auroc"),
    grouping_key="patient (X-ray), the volume's patient (CT)",
    inputs=(IMAGE, MODALITY),
    metadata=(
        PATIENT,
        C("volume_id", "string", "CT volume (scan) id"),
        C("slice_index", "int32", "slice index within the volume"),
        C("window", "string", "the display window used, as 'center/width' in HU"),
    ),
    sources=(KERMANY_CXR, CC_CCII, MOSMEDDATA, DICOM_SERIES),
))

register_task(TaskSpec(
    name="bone_age",
    title="Bone age (hand X-ray)",
    sample="one hand X-ray with sex",
    modalities=("xray",),
    problem_type="regression",
    labels=(
        LabelSpec("bone_age_months", "regression", description="bone age in months"),
        LabelSpec("bone_age_bin", "class", BONE_AGE_BIN_NAMES, "months binned at [0,60), [60,108), [108,144), [144,180), [180,inf)", bins=BONE_AGE_BINS),
    ),
    metrics=("accuracy", "mae"),
    grouping_key="image id (one image per child)",
    inputs=(IMAGE, MODALITY, C("sex", "string", "M or F")),
    sources=(RSNA_BONE_AGE,),
))

register_task(TaskSpec(
    name="diabetic_retinopathy",
    title="Diabetic retinopathy and retinal disease (OCT and fundus)",
    sample="one OCT B-scan or one fundus photograph, modality recorded",
    modalities=("oct", "fundus"),
    problem_type="single_label_classification",
    labels=(
        LabelSpec("oct_finding", "class", ("cnv", "dme", "drusen", "normal"), "OCT B-scans only", metrics=("accuracy",)),
        LabelSpec("dr_grade", "class", DR_GRADES, "fundus photographs only: DR grade 0-4",
                  metrics=("accuracy", "quadratic_kappa")),
    ),
    metrics=("accuracy", "quadratic_kappa"),
    grouping_key="patient (OCT id; EyePACS patient of both eyes)",
    inputs=(IMAGE, MODALITY),
    metadata=(PATIENT, C("eye", "string", "left / right where known")),
    sources=(OCT2017, APTOS2019, EYEPACS),
))

register_task(TaskSpec(
    name="motor_imagery",
    title="Motor imagery (EEG)",
    sample="one EEG epoch around a cue, channels x time, float32, with sampling rate and channel names",
    modalities=("eeg",),
    problem_type="single_label_classification",
    labels=(LabelSpec("movement", "class", ("left_hand", "right_hand", "both_fists", "both_feet", "tongue", "rest")),),
    metrics=("accuracy", "cohen_kappa"),
    grouping_key="subject",
    inputs=(
        C("eeg", "array2d_float32", "epoch, channels x time, in volts", modality="eeg"),
        C("sfreq", "float32", "sampling rate in Hz"),
        C("channel_names", "list_string", "channel names, in row order"),
    ),
    metadata=(
        C("subject", "string"), C("session", "string"), C("run", "string"),
        C("cue_onset", "float32", "the cue's time in its recording, in seconds (the epoch starts there)"),
        C("within_subject_split", "string",
          "train / test for the within-subject protocol (later runs or the evaluation session are test); the "
          "config's own splits are cross-subject"),
    ),
    sources=(EEGMMIDB, BCI_IV_2A),
))

register_task(TaskSpec(
    name="cell_type",
    title="Cell type classification (scRNA-seq)",
    sample="one cell: expression over a recorded gene panel, stored sparse (indices + values), with tissue/organ and donor",
    modalities=("scrna",),
    problem_type="single_label_classification",
    labels=(LabelSpec("cell_type", "text", description="cell type name (Cell Ontology label where given); vocabulary recorded per build"),),
    metrics=("accuracy", "macro_f1"),
    grouping_key="donor",
    inputs=(
        C("gene_indices", "list_int32", "positions in the recorded gene panel of the non-zero genes", modality="scrna"),
        C("gene_values", "list_float32", "expression of those genes", modality="scrna"),
        C("gene_panel", "string", "id of the recorded gene list the indices refer to"),
    ),
    metadata=(
        C("tissue", "string"), C("organ", "string"), C("donor", "string"),
        C("age", "float32", "the donor's age in years where the source records it (the registry's SourceSpec.age "
          "says where); None elsewhere"),
        C("expression_matrix", "string",
          "which matrix of the file the values are (layers/counts, raw/X or X), with its detected normalisation "
          "where the source states it, e.g. 'raw/X (raw counts)'"),
    ),
    sources=(PBMC68K_REDUCED, CELLXGENE, SC_EXPRESSION_ATLAS),
))

register_task(TaskSpec(
    name="expression_prediction",
    title="Gene expression prediction (DNA + scRNA-seq)",
    sample="one (gene, context): promoter DNA 7,000 nt upstream to 3,500 nt downstream of the TSS, and a pseudo-bulk profile",
    modalities=("dna", "scrna"),
    problem_type="regression",
    labels=(LabelSpec("log_expression", "regression", description="log expression of the gene in that context"),),
    metrics=("pearson", "spearman"),
    grouping_key="gene; whole chromosomes held out for test",
    inputs=(
        C("promoter", "string", "promoter DNA window (A/C/G/T/N); the TSS at position 7,000", modality="dna",
          crop_center=7000),  # an encoder reads the TSS and core promoter (Xpresso's window: 7,000 nt upstream)
        C("context", "string", "the expression context (tissue, sample group or cell type)"),
        C("profile_indices", "list_int32", "pseudo-bulk profile of the context, target gene masked: gene positions", modality="scrna"),
        C("profile_values", "list_float32", "pseudo-bulk profile values", modality="scrna"),
        C("gene_panel", "string", "id of the recorded gene list the profile indices refer to"),
    ),
    metadata=(
        C("gene_id", "string"), C("chromosome", "string"),
        C("window", "string", "the promoter window's locus as the FASTA header gives it, e.g. chr1:4869-15369(+)"),
        C("organ", "string", "the context's organ where the source states it (tcga_promoters: contexts.tsv beside "
          "the table); None elsewhere"),
    ),
    sources=(TCGA_XENA,),
))

register_task(TaskSpec(
    name="protein_structure",
    title="Protein structure prediction (sequence -> 3D)",
    sample="one chain: sequence, C-alpha (and backbone where present) coordinates in Angstrom, residue numbers, mask",
    modalities=("protein",),
    problem_type="structure",
    labels=(LabelSpec("ca_coords", "coords", description="C-alpha coordinates, L x 3, in Angstrom",
                      residue_modality="protein"),),
    metrics=("tm_score", "rmsd", "gdt_ts"),
    grouping_key="sequence group (identical and >= 90%-identical chains together)",
    inputs=(C("sequence", "string", "one-letter amino-acid sequence", modality="protein"),),
    metadata=(
        C("residue_mask", "list_int32", "1 where the residue's C-alpha was observed; 0 (coordinates 0) where missing"),
        C("residue_numbers", "list_int32", "author residue numbers, missing residues included"),
        C("insertion_codes", "string", "one insertion code per residue, a space where none"),
        C("n_coords", "coords_float32", "backbone N coordinates, L x 3, Angstrom; 0 where absent (backbone_mask)"),
        C("c_coords", "coords_float32", "backbone C coordinates, L x 3, Angstrom; 0 where absent"),
        C("o_coords", "coords_float32", "backbone O coordinates, L x 3, Angstrom; 0 where absent"),
        C("backbone_mask", "list_int32", "per residue, the backbone atoms observed: bits 1 N, 2 CA, 4 C, 8 O"),
        C("nonstandard_residues", "list_string", "modified or unknown residues as NAME:number (e.g. MSE:57)"),
        C("chain_id", "string"), C("pdb_id", "string"),
        C("resolution", "float32", "in Angstrom; None where the entry gives none (NMR)"),
    ),
    sources=(RCSB_PDB,),
))

register_task(TaskSpec(
    name="med_vqa",
    title="Medical visual question answering",
    sample="one (image, question)",
    modalities=("xray", "ct", "mri", "pathology", "text"),
    problem_type="vqa",
    labels=(
        LabelSpec("answer", "text", description="the answer; closed answers are classified over the closed vocabulary"),
    ),
    metrics=("vqa_accuracy", "exact_match", "token_f1"),
    grouping_key="image (all questions on one image together)",
    inputs=(IMAGE, MODALITY, C("question", "string", "the question", modality="text")),
    metadata=(
        C("answer_type", "string", "closed or open"),
        C("question_type", "string", "the publisher's question category (VQA-RAD question_type, SLAKE content_type)"),
        C("organ", "string", "body part or organ shown, as the publisher names it"),
        C("language", "string", "the question's language (en, zh)"),
    ),
    sources=(VQA_RAD, SLAKE),
))

# --- extras: optional configs beside the eleven tasks ---------------------------------------------------------
PMC_OA = SourceSpec(
    name="pmc_oa",
    title="PMC-OA (Lin et al., PMC-CLIP, MICCAI 2023)",
    modality="figure",
    citation=(
        "@inproceedings{lin2023pmcclip, title={PMC-CLIP: Contrastive Language-Image Pre-training using Biomedical "
        "Documents}, author={Lin, Weixiong and Zhao, Ziheng and Zhang, Xiaoman and Wu, Chaoyi and Zhang, Ya and "
        "Wang, Yanfeng and Xie, Weidi}, booktitle={Medical Image Computing and Computer Assisted Intervention "
        "(MICCAI)}, year={2023}}"
    ),
    license="per article: the PMC Open Access subset mixes CC BY, CC BY-NC and other licences",
    redistributable=False,
    homepage="https://huggingface.co/datasets/axiong/pmc_oa",
    layout=(
        "images.zip unpacked in place to caption_T060_filtered_top4_sep_v0_subfigures/PMC<id>_<figure>_<n>.jpg "
        "(or under images/); pmc_oa.jsonl, one JSON object a line (image, caption = the subcaption, "
        "alignment_type, alignment_score); pmc_oa_beta.jsonl (image, caption = the whole compound caption); the "
        "early release's train.jsonl / valid.jsonl / test.jsonl (image, caption, pmcid, url_name)"
    ),
    grouping=(
        "article (pmcid where the row gives it, else the PMC id the image file name starts with), so subfigures "
        "of one figure and figures of one article stay together; exact copies of an image grouped too (not near "
        "duplicates: distinct plots of one shape share perceptual hashes)"
    ),
    notes=(
        "About 1.65M subfigure-subcaption pairs. Not redistributable as a whole: each article keeps its own "
        "licence (CC BY, CC BY-NC, ...), so the config is left out of pushes. Without the early release's split "
        "files the publisher gives no split: pairs are split by article. figure_caption comes from "
        "pmc_oa_beta.jsonl where it is present."
    ),
)

register_task(TaskSpec(
    name="pmc_pairs",
    title="Image-caption pairs from PubMed Central (contrastive alignment)",
    sample="one (subfigure, subcaption) pair from a PMC Open Access article",
    modalities=("figure", "text"),
    problem_type="contrastive",
    labels=(),
    metrics=("recall_at_1", "recall_at_5"),
    grouping_key="article (PMC id), plus exact-duplicate image groups",
    inputs=(
        IMAGE,
        C("modality", "string", "the image's modality: figure (a scientific figure of any kind)"),
        C("caption", "string", "the subfigure's own caption (PMC-OA's subcaption): the image's pair", modality="text"),
    ),
    metadata=(
        C("pmcid", "string", "the article's PubMed Central id (e.g. PMC212319)"),
        C("figure_caption", "string", "the whole compound caption of the figure (pmc_oa_beta.jsonl), where given"),
        C("alignment_type", "string", "how the publisher aligned subcaption and subfigure, where given"),
        C("alignment_score", "float32", "the publisher's alignment score, where given"),
        C("url_name", "string", "the figure's file name on PMC (early release), where given"),
    ),
    sources=(PMC_OA,),
    # pretraining pairs: most go to training; 5% of articles still give tens of thousands of test pairs
    split_fractions=(0.90, 0.05, 0.05),
    validation_fraction=0.05,
    notes=(
        "An extra config, not one of the paper's eleven tasks: the paper's 'one million image-text pairs' for "
        "the contrastive alignment behind zero-shot transfer. No label column: the pairing is the supervision "
        "(the other captions of a batch are the negatives); recall@K scores image-to-text and text-to-image "
        "retrieval."
    ),
    extra=True,
))
